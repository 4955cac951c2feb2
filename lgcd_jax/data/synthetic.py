"""A seeded synthetic two-domain world, small enough to run the whole system on a laptop CPU.

Domain A is a grocery store and domain B a kitchenware store. Both are driven by the same latent
*topics* (baking, coffee, tea, pasta, grilling, ...), so that what a user buys in one store predicts what
they buy in the other: cross-domain transfer is real, and it is learnable from the overlap users.

The generative process (`generate_world`; every draw comes from one `numpy.random.Generator` seeded
with `seed`, so a seed always gives the same world and different seeds give different worlds):

1. Topics. `TOPICS` lists 20 topics. Each has a small product vocabulary and a few modifier words per
   domain (baking: "Vanilla Extract", "Cocoa Powder" in A; "Stand Mixer", "Cooling Rack" in B) and one
   or two tag words that either domain may use ("Baking", "Espresso"). Topics get a popularity drawn
   from a symmetric Dirichlet, so some are more common than others.
2. Items. Each domain has `items_per_domain * scale` items. Every item belongs to one main topic (topic
   sizes follow a multinomial around the uniform split, at least 3 items each). Its title is composed
   from its topic's product and modifier words plus the domain's brand, adjective and size words, e.g.
   "Harvest Valley Organic Dutch-Process Cocoa Powder, 8 oz". Titles of one topic share words, so
   within a domain text similarity carries the topic; across domains only the tag words (and a few
   shared nouns like "Tea") overlap, so cross-domain text carries weak signal. Titles are unique within
   a domain. Within a topic, item popularity is Zipf-like (weight 1 / rank^zipf, ranks shuffled).
   Item order is shuffled, so an item's index says nothing about its topic. Ids are "A00001", "B00001".
3. Users. A user's taste is a sparse mixture over topics: 1-3 dominant topics (picked with the topic
   popularity), Dirichlet-like weights over them, and a small `background` share spread over all topics
   by popularity. Taste drifts: a second taste is drawn the same way, and along the user's timeline the
   taste moves linearly from the first towards the second, by a user-specific amount in [0, drift].
4. Sequences. A user's timeline interleaves their A and B events at random. Each event draws a topic
   from the (drifted) taste at that moment, then an item of that topic in the event's domain by
   popularity. A user never gets the same item twice in a domain (repeats are redrawn). Lengths are
   lognormal: single-domain users have 3-40 items; overlap users have 2-40 items in each domain.
5. Pools. `train_users * scale` training users: a share `overlap_share` are overlap users (both
   domains, same taste), the rest split evenly into A-only and B-only users. Evaluation users are
   further overlap users, `eval_users * scale` per (direction, split), held out of every training pool:
   for A->B a user's timeline ends with a B event; the input is their A items in order and the label
   is that last B item (earlier B items are hidden, as in the real split). B->A mirrors it.
   User ids ("u000123") are unique over all pools and shuffled, so an id says nothing about its pool.

At scale 1.0 and the default overlap_share 0.3 that is 1,200 items per domain, 1,400 A-only, 1,400
B-only and 1,200 overlap training users, and 200 evaluation users per (direction, split).
`configs/demo.py` asks for overlap_share 0.15 (Food-Kitchen's share of overlap users is 14.7 %): 600
overlap and 1,700 users in each single-domain pool, with 1,000 evaluation users per (direction, split).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lgcd_jax.data.prepared import DIRECTIONS, DOMAINS, SPLITS, RawDataset, direction_domains
from lgcd_jax.data.ragged import offsets_from_lengths

ITEMS_PER_DOMAIN = 1200
TRAIN_USERS = 4000
EVAL_USERS = 200
MIN_ITEMS_PER_TOPIC = 3
MAX_LEN = 40


@dataclasses.dataclass(frozen=True)
class Topic:
  """A latent interest and the words it shows in each domain's titles."""

  name: str
  tags: tuple[str, ...]  # words either domain may put in a title
  a_products: tuple[str, ...]
  a_modifiers: tuple[str, ...]
  b_products: tuple[str, ...]
  b_modifiers: tuple[str, ...]


def _t(name, tags, a_products, a_modifiers, b_products, b_modifiers) -> Topic:
  split = lambda s: tuple(w.strip() for w in s.split(";"))
  return Topic(name, split(tags), split(a_products), split(a_modifiers), split(b_products),
               split(b_modifiers))


TOPICS: tuple[Topic, ...] = (
    _t("baking", "Baking",
       "All-Purpose Flour; Cane Sugar; Vanilla Extract; Baking Soda; Cocoa Powder; Chocolate Chips; "
       "Brown Sugar; Almond Flour; Baking Powder; Powdered Sugar; Cake Mix",
       "Unbleached; Bourbon; Dutch-Process; Semi-Sweet; Superfine",
       "Stand Mixer; Balloon Whisk; Baking Sheet; Mixing Bowl Set; Rolling Pin; Measuring Cups; "
       "Cake Pan; Muffin Tin; Pastry Brush; Cooling Rack; Flour Sifter",
       "Tilt-Head; Aluminized; Nesting; Springform; Half-Sheet"),
    _t("coffee", "Coffee; Espresso",
       "Whole Bean Coffee; Ground Coffee; Cold Brew Concentrate; Coffee Pods; Instant Coffee; "
       "Coffee Creamer; Paper Filters; Decaf Beans; Espresso Roast",
       "Dark Roast; Medium Roast; Colombian; Arabica; French Roast",
       "Burr Grinder; Espresso Machine; Pour-Over Dripper; French Press; Milk Frother; Coffee Maker; "
       "Gooseneck Kettle; Tamper; Coffee Scale",
       "Conical; 12-Cup; Programmable; Barista; Double-Wall"),
    _t("tea", "Tea",
       "Green Tea; Black Tea; Chamomile Tea; Matcha Powder; Earl Grey; Oolong Tea; Chai Blend; "
       "Herbal Infusion; Loose Leaf Sencha",
       "Jasmine; Ceremonial; Decaffeinated; English Breakfast; Peppermint",
       "Tea Kettle; Teapot; Tea Infuser; Matcha Whisk; Tea Tumbler; Tea Cup Set; Tea Strainer; "
       "Tea Canister",
       "Whistling; Cast Iron; Glass; Bamboo; Porcelain"),
    _t("pasta", "Pasta; Italian",
       "Spaghetti; Penne; Marinara Sauce; Pesto; Lasagna Noodles; Parmesan; Olive Oil; Fettuccine; "
       "Tomato Passata",
       "Bronze-Cut; Durum Wheat; San Marzano; Basil; Extra Virgin",
       "Pasta Maker; Colander; Pasta Pot; Cheese Grater; Ravioli Mold; Spaghetti Server; "
       "Pasta Drying Rack; Garlic Press",
       "Hand-Crank; Stockpot; Rotary; Collapsible; 8-Quart"),
    _t("asian", "Asian; Stir-Fry",
       "Soy Sauce; Jasmine Rice; Rice Noodles; Sesame Oil; Hoisin Sauce; Fish Sauce; Curry Paste; "
       "Miso Paste; Oyster Sauce",
       "Low-Sodium; Thai; Toasted; Red; Korean",
       "Carbon Steel Wok; Rice Cooker; Bamboo Steamer; Chopsticks Set; Cleaver; Wok Spatula; "
       "Dumpling Press; Spider Strainer",
       "Flat-Bottom; Fuzzy Logic; Two-Tier; Hand-Hammered; Reusable"),
    _t("bbq", "BBQ; Grill",
       "BBQ Sauce; Dry Rub; Hickory Smoke Salt; Beef Jerky; Marinade; Wood Chips; Mesquite Seasoning; "
       "Hot Sauce",
       "Smoky; Texas; Sweet Heat; Kansas City; Applewood",
       "Grill Brush; Meat Thermometer; Grill Tongs; Grill Basket; Smoker Box; Basting Brush; "
       "Cast Iron Griddle; Grill Mat",
       "Instant-Read; Wireless; Heavy-Duty; Non-Stick; Reversible"),
    _t("smoothies", "Smoothie; Juice",
       "Protein Powder; Chia Seeds; Frozen Berries; Acai Packs; Spirulina; Flax Seeds; Coconut Water; "
       "Greens Powder",
       "Vanilla; Unflavored; Superfood; Tropical; Mixed",
       "High-Speed Blender; Juicer; Personal Blender; Smoothie Cups; Citrus Press; Blender Bottle; "
       "Cold Press Juicer",
       "Portable; Masticating; 1200-Watt; Single-Serve; BPA-Free"),
    _t("wine", "Wine",
       "Cooking Wine; Red Wine Vinegar; Grape Juice; Mulling Spices; Wine Jelly; Sparkling Cider",
       "Cabernet; Merlot; Balsamic; Rose; Chardonnay",
       "Wine Glasses; Decanter; Corkscrew; Wine Aerator; Wine Rack; Wine Chiller; Bottle Stopper; "
       "Electric Wine Opener",
       "Crystal; Stemless; Lead-Free; Countertop; Waiter's"),
    _t("spices", "Spice; Seasoning",
       "Ground Cumin; Smoked Paprika; Black Peppercorns; Cinnamon Sticks; Turmeric; Sea Salt; "
       "Chili Flakes; Garam Masala; Oregano",
       "Organic; Whole; Himalayan Pink; Ceylon; Hungarian",
       "Spice Rack; Pepper Mill; Mortar And Pestle; Spice Jars; Salt Cellar; Spice Grinder; "
       "Magnetic Tins",
       "Rotating; Adjustable; Granite; Labeled; Acacia"),
    _t("breakfast", "Breakfast",
       "Rolled Oats; Maple Syrup; Pancake Mix; Granola; Honey; Strawberry Jam; Peanut Butter; "
       "Muesli; Breakfast Cereal",
       "Pure; Buttermilk; Steel-Cut; Raw; Crunchy",
       "Waffle Maker; Toaster; Egg Cooker; Pancake Griddle; Cereal Bowls; Butter Dish; Egg Poacher; "
       "Toaster Oven",
       "Belgian; 4-Slice; Rapid; Wide-Slot; Stoneware"),
    _t("snacks", "Snack",
       "Potato Chips; Trail Mix; Pretzels; Popcorn Kernels; Roasted Almonds; Granola Bars; "
       "Crackers; Dried Mango; Cheese Puffs",
       "Kettle-Cooked; Salted; Honey Roasted; Sea Salt; Variety",
       "Popcorn Maker; Snack Containers; Serving Tray; Chip Clips; Air Fryer; Nut Bowl; "
       "Food Storage Set",
       "Hot-Air; Stackable; Airtight; Divided; 5-Quart"),
    _t("vegan", "Vegan; Plant-Based",
       "Oat Milk; Almond Milk; Tofu; Nutritional Yeast; Tempeh; Vegan Butter; Lentils; Chickpeas; "
       "Seitan",
       "Unsweetened; Extra-Firm; Barista Edition; Sprouted; Non-Dairy",
       "Nut Milk Bag; Tofu Press; Soy Milk Maker; Spiralizer; Sprouting Jar; Vegetable Chopper; "
       "Salad Spinner",
       "Fine-Mesh; Compact; Automatic; Mandoline; Large"),
    _t("canning", "Canning; Preserving",
       "Pectin; Pickling Salt; Pickling Spice; Canning Vinegar; Jam Sugar; Citric Acid; Dill Seed",
       "Low-Sugar; Classic; Kosher; Fresh; Natural",
       "Mason Jars; Canning Lids; Jar Lifter; Water Bath Canner; Canning Funnel; Pressure Canner; "
       "Fermentation Weights",
       "Wide-Mouth; Regular-Mouth; Stainless; Enamel; Glass"),
    _t("pizza", "Pizza",
       "Pizza Dough Mix; Pizza Sauce; Mozzarella; Pepperoni; Semolina Flour; Tipo 00 Flour; "
       "Italian Seasoning",
       "Neapolitan; Thin Crust; Shredded; Spicy; Deep Dish",
       "Pizza Stone; Pizza Peel; Pizza Cutter; Pizza Oven; Pizza Pan; Dough Scraper; Pizza Screen",
       "Cordierite; Rocker; Outdoor; Perforated; 16-Inch"),
    _t("mexican", "Mexican; Taco",
       "Corn Tortillas; Salsa Verde; Refried Beans; Taco Seasoning; Chipotle Peppers; Masa Harina; "
       "Enchilada Sauce",
       "Authentic; Medium; Fire-Roasted; Mild; Adobo",
       "Tortilla Press; Molcajete; Taco Holders; Tortilla Warmer; Citrus Squeezer; Comal; "
       "Guacamole Bowl",
       "Cast Aluminum; Volcanic Stone; Insulated; Stand-Up; Handmade"),
    _t("cocktails", "Cocktail; Bar",
       "Cocktail Mixer; Bitters; Simple Syrup; Maraschino Cherries; Tonic Water; Margarita Salt; "
       "Grenadine",
       "Aromatic; Craft; Old Fashioned; Lime; Premium",
       "Cocktail Shaker; Jigger; Muddler; Bar Spoon; Ice Mold; Cocktail Strainer; Highball Glasses",
       "Boston; Double; Copper; Sphere; Hawthorne"),
    _t("soup", "Soup; Slow Cooker",
       "Chicken Broth; Bouillon Cubes; Split Peas; Soup Mix; Bone Broth; Vegetable Stock; "
       "Dried Beans",
       "Low-Sodium; Hearty; Homestyle; Roasted; Beef",
       "Slow Cooker; Dutch Oven; Soup Ladle; Immersion Blender; Stock Pot; Pressure Cooker; "
       "Soup Bowls",
       "6-Quart; Enameled; Multi-Use; Cordless; Oven-Safe"),
    _t("cheese", "Cheese; Charcuterie",
       "Aged Cheddar; Brie; Salami; Prosciutto; Fig Spread; Water Crackers; Gouda; Olives",
       "Sharp; Smoked; Dry-Cured; Creamy; Imported",
       "Charcuterie Board; Cheese Knife Set; Cheese Slicer; Cheese Dome; Serving Platter; "
       "Cheese Plane",
       "Acacia Wood; Slate; Marble; Wire; Round"),
    _t("sourdough", "Sourdough; Bread",
       "Bread Flour; Sourdough Starter; Rye Flour; Active Dry Yeast; Whole Wheat Flour; Seed Mix; "
       "Vital Wheat Gluten",
       "Stone-Ground; High-Protein; Dehydrated; Organic; Dark",
       "Proofing Basket; Bread Lame; Loaf Pan; Bread Knife; Bread Box; Dough Whisk; Bread Machine",
       "Banneton; Rattan; Serrated; Danish; Oval"),
    _t("icecream", "Ice Cream; Dessert",
       "Ice Cream Toppings; Hot Fudge; Waffle Cones; Caramel Sauce; Gelato Base; Whipped Topping; "
       "Rainbow Sprinkles",
       "Salted Caramel; Belgian Chocolate; Mini; Dairy-Free; Classic",
       "Ice Cream Maker; Ice Cream Scoop; Popsicle Molds; Dessert Bowls; Sundae Glasses; "
       "Freezer Tubs",
       "Compressor; Trigger; Silicone; Insulated; Footed"),
)

_A_BRANDS = ("Harvest Valley", "Golden Acre", "Blue Ridge", "Nature's Table", "Sunny Fields", "Old Mill",
             "Pure Pantry", "Green Meadow", "Maple Hollow", "Riverbend Farms", "Good Grain", "Bright Orchard",
             "Little Barn", "True North", "Morning Dew", "Prairie Gold", "Stonebrook", "Wildflower Co",
             "Cedar Creek", "Honeyfield")
_A_ADJECTIVES = ("Organic", "Natural", "Premium", "Gluten-Free", "Classic", "Artisan", "Gourmet",
                 "Non-GMO", "Kosher", "Original", "Family Size", "Small Batch")
_A_SIZES = ("8 oz", "12 oz", "16 oz", "1 lb", "2 lb", "5 lb", "Pack of 2", "Pack of 3", "Pack of 6",
            "12 Count", "24 Count", "32 fl oz", "500 g", "1 kg")
_B_BRANDS = ("Steelcraft", "HomeForge", "Kitchora", "ChefLine", "Brightware", "Oakhurst Home",
             "Cuisimate", "Panworks", "NordHaus", "Vistaware", "Copperleaf", "Ironbark", "Zestique",
             "Clayhill Pro", "Lumen Kitchen", "Everhome", "Tidewell", "Bramblewood", "Kasa Living",
             "Fennel & Oak")
_B_ADJECTIVES = ("Stainless Steel", "Professional", "Heavy Duty", "Dishwasher Safe", "Ergonomic",
                 "Premium", "Deluxe", "Modern", "Classic", "Food-Grade", "Easy-Clean", "Commercial")
_B_SIZES = ("Small", "Medium", "Large", "Set of 2", "Set of 3", "Set of 4", "2-Piece", "6-Piece",
            "10-Inch", "12-Inch", "1.5 Quart", "3 Quart", "Black", "White", "Red", "Silver")
_WORDS = {"A": (_A_BRANDS, _A_ADJECTIVES, _A_SIZES), "B": (_B_BRANDS, _B_ADJECTIVES, _B_SIZES)}


@dataclasses.dataclass
class SyntheticWorld:
  """The generated dataset and the latent structure behind it (for tests and diagnostics)."""

  raw: RawDataset
  item_topics: dict[str, np.ndarray]  # domain -> [num_items] topic index of each item
  topic_names: tuple[str, ...]


def _scaled(n: int, scale: float) -> int:
  return int(round(n * scale))


def _make_title(rng: np.random.Generator, topic: Topic, domain: str) -> str:
  brands, adjectives, sizes = _WORDS[domain]
  products, modifiers = ((topic.a_products, topic.a_modifiers) if domain == "A"
                         else (topic.b_products, topic.b_modifiers))
  product = products[rng.integers(len(products))]
  optional = []
  if rng.random() < 0.6:
    optional.append(adjectives[rng.integers(len(adjectives))])
  if rng.random() < 0.35:  # the tag words are the only topic words both domains share
    optional.append(topic.tags[rng.integers(len(topic.tags))])
  if rng.random() < 0.6:
    optional.append(modifiers[rng.integers(len(modifiers))])
  words = [brands[rng.integers(len(brands))]]
  for w in optional:  # skip a word that would repeat ("Snack Snack Containers")
    if w.lower() not in " ".join(words[1:] + [product]).lower():
      words.append(w)
  return " ".join(words + [product]) + ", " + sizes[rng.integers(len(sizes))]


def _make_items(rng: np.random.Generator, num_items: int, topic_of: np.ndarray, topics, domain: str
                ) -> list[tuple[str, str]]:
  seen: set[str] = set()
  items = []
  for i, t in enumerate(topic_of):
    for _ in range(30):
      title = _make_title(rng, topics[t], domain)
      if title not in seen:
        break
    else:  # vocabulary exhausted (only at extreme sizes): a model number keeps titles unique
      title = f"{title} Model {i + 1}"
    seen.add(title)
    items.append((f"{domain}{i + 1:05d}", title))
  assert len(items) == num_items
  return items


class _ItemSampler:
  """Draws items of given topics by within-topic Zipf popularity, vectorised over events."""

  def __init__(self, rng: np.random.Generator, topic_of: np.ndarray, num_topics: int, zipf: float):
    self.num_items = len(topic_of)
    self.order = np.argsort(topic_of, kind="stable")  # item indices grouped by topic
    counts = np.bincount(topic_of, minlength=num_topics)
    self.start = offsets_from_lengths(counts)  # topic t's items: order[start[t]:start[t + 1]]
    self.popularity = np.zeros(self.num_items)
    # cdf over the grouped items: topic t's segment rises from t to exactly t + 1, so one
    # searchsorted of (topic + u) finds the item for every event at once.
    self.cdf = np.zeros(self.num_items)
    for t in range(num_topics):
      lo, hi = self.start[t], self.start[t + 1]
      w = 1.0 / (rng.permutation(hi - lo) + 1.0) ** zipf
      w /= w.sum()
      self.popularity[self.order[lo:hi]] = w
      c = np.cumsum(w)
      c[-1] = 1.0
      self.cdf[lo:hi] = t + c

  def draw(self, rng: np.random.Generator, topics: np.ndarray) -> np.ndarray:
    pos = np.searchsorted(self.cdf, topics + rng.random(len(topics)), side="right")
    pos = np.clip(pos, self.start[topics], self.start[topics + 1] - 1)
    return self.order[pos]


def _tastes(rng: np.random.Generator, n: int, topic_pop: np.ndarray, background: float) -> np.ndarray:
  """[n, K] sparse tastes: 1-3 dominant topics picked by popularity, plus a popularity background."""
  k_topics = len(topic_pop)
  k = rng.choice([1, 2, 3], p=[0.35, 0.45, 0.20], size=n)
  keys = np.log(topic_pop)[None, :] + rng.gumbel(size=(n, k_topics))  # Gumbel top-k = sampling w/o repl.
  rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
  w = rng.gamma(1.5, size=(n, k_topics)) * (rank < k[:, None])
  w /= w.sum(axis=1, keepdims=True)
  return (1.0 - background) * w + background * topic_pop[None, :]


def _lengths(rng: np.random.Generator, n: int, median: float, lo: int, hi: int) -> np.ndarray:
  raw = np.exp(rng.normal(np.log(median), 0.6, size=n))
  return np.clip(np.round(raw), lo, hi).astype(np.int64)


def _simulate(rng: np.random.Generator, tastes: tuple[np.ndarray, np.ndarray, np.ndarray],
              lengths: dict[str, np.ndarray], samplers: dict[str, _ItemSampler],
              last_domain: str | None = None, before: dict | None = None
              ) -> dict[str, list[list[int]]]:
  """Every user's timeline at once; returns each domain's sequences in time order.

  With `last_domain`, each user's final event is in that domain (it becomes the evaluation label).
  `before`, a dict, receives per domain the other domain's events before each event
  (RawDataset.overlap_before); it draws nothing, so the world is the same with it or without.
  """
  theta1, theta2, drift = tastes
  n = len(drift)
  len_a, len_b = lengths.get("A", np.zeros(n, np.int64)), lengths.get("B", np.zeros(n, np.int64))
  total = len_a + len_b
  starts = np.concatenate([[0], np.cumsum(total)[:-1]])
  user = np.repeat(np.arange(n), total)
  pos = np.arange(len(user)) - starts[user]
  dom = (pos >= len_a[user]).astype(np.int64)  # 0 = A, 1 = B, before interleaving

  # Interleave the two domains at random within each user's timeline.
  key = rng.random(len(user))
  if last_domain is not None:
    first_of_domain = starts + (0 if last_domain == "A" else len_a)
    key[first_of_domain] = 2.0
  order = np.lexsort((key, user))
  dom = dom[order]
  t = pos / np.maximum(total[user] - 1, 1)  # time in [0, 1]; user/pos are unchanged by the sort

  # Topic of each event from the drifted taste, by inverse cdf.
  p = theta1[user] + (drift[user] * t)[:, None] * (theta2[user] - theta1[user])
  cdf = np.cumsum(p, axis=1)
  topic = np.minimum((cdf < rng.random(len(user))[:, None] * cdf[:, -1:]).sum(axis=1), p.shape[1] - 1)

  out = {}
  for di, d in enumerate(DOMAINS):
    mask = dom == di
    if not mask.any():
      out[d] = [[] for _ in range(n)]
      continue
    u_d, t_d = user[mask], topic[mask]
    it = samplers[d].draw(rng, t_d)
    # No item twice per user and domain: redraw repeats in their topic, and after a few rounds (a
    # small topic can run out) from the whole domain.
    for round_ in range(40):
      code = u_d * samplers[d].num_items + it
      srt = np.argsort(code, kind="stable")  # stable: the earliest occurrence stays
      dup = np.zeros(len(code), dtype=bool)
      dup[srt[1:]] = code[srt[1:]] == code[srt[:-1]]
      if not dup.any():
        break
      if round_ < 10:
        it[dup] = samplers[d].draw(rng, t_d[dup])
      else:
        it[dup] = rng.integers(samplers[d].num_items, size=int(dup.sum()))
    counts = np.bincount(u_d, minlength=n)
    out[d] = [s.tolist() for s in np.split(it, np.cumsum(counts)[:-1])]
    if before is not None:
      a_before = np.cumsum(dom == 0) - (dom == 0)  # A events earlier in the run of all users
      a_before = a_before - np.concatenate([[0], np.cumsum(dom == 0)])[starts][user]  # this user's
      other = a_before if d == "B" else pos - a_before
      before[d] = [s.tolist() for s in np.split(other[mask], np.cumsum(counts)[:-1])]
  return out


def generate_world(seed: int = 0, scale: float = 1.0, overlap_share: float = 0.3, *,
                   items_per_domain: int = ITEMS_PER_DOMAIN, train_users: int = TRAIN_USERS,
                   eval_users: int = EVAL_USERS, num_topics: int = len(TOPICS), zipf: float = 1.0,
                   background: float = 0.1, drift: float = 0.5) -> SyntheticWorld:
  """Generates the world (see the module docstring); sizes are the scale-1.0 sizes times `scale`."""
  if not scale > 0:
    raise ValueError(f"scale must be positive, got {scale}")
  if not 0.0 < overlap_share < 1.0:
    raise ValueError(f"overlap_share must be in (0, 1), got {overlap_share}")
  if not 1 <= num_topics <= len(TOPICS):
    raise ValueError(f"num_topics must be in [1, {len(TOPICS)}], got {num_topics}")
  if not (0.0 <= background <= 1.0 and 0.0 <= drift <= 1.0 and zipf >= 0.0):
    raise ValueError("background and drift must be in [0, 1] and zipf non-negative")
  n_items = _scaled(items_per_domain, scale)
  n_train = _scaled(train_users, scale)
  n_overlap = int(round(n_train * overlap_share))
  n_single = (n_train - n_overlap) // 2
  if eval_users < 1:
    raise ValueError(f"eval_users must be >= 1, got {eval_users}")
  n_eval = _scaled(eval_users, scale)
  if n_items < max(MIN_ITEMS_PER_TOPIC * num_topics, 2 * MAX_LEN):
    raise ValueError(f"scale {scale} gives {n_items} items per domain; need at least "
                     f"{max(MIN_ITEMS_PER_TOPIC * num_topics, 2 * MAX_LEN)}")
  if min(n_overlap, n_single, n_eval) < 1:
    raise ValueError(f"scale {scale} with overlap_share {overlap_share} leaves a pool empty")

  rng = np.random.default_rng(seed)
  topics = TOPICS[:num_topics]
  topic_pop = rng.dirichlet(np.full(num_topics, 3.0))

  item_topics, samplers, items = {}, {}, {}
  for d in DOMAINS:
    sizes = MIN_ITEMS_PER_TOPIC + rng.multinomial(n_items - MIN_ITEMS_PER_TOPIC * num_topics,
                                                  np.full(num_topics, 1.0 / num_topics))
    topic_of = rng.permutation(np.repeat(np.arange(num_topics), sizes))
    item_topics[d] = topic_of
    samplers[d] = _ItemSampler(rng, topic_of, num_topics, zipf)
    items[d] = _make_items(rng, n_items, topic_of, topics, d)

  def users(n):
    return (_tastes(rng, n, topic_pop, background), _tastes(rng, n, topic_pop, background),
            rng.uniform(0.0, drift, size=n))

  n_users_total = 2 * n_single + n_overlap + len(DIRECTIONS) * len(SPLITS) * n_eval
  ids = iter(f"u{i:06d}" for i in rng.permutation(n_users_total) + 1)

  pools = {}
  for pool, d in (("A_only", "A"), ("B_only", "B")):
    seqs = _simulate(rng, users(n_single), {d: _lengths(rng, n_single, 7.0, 3, MAX_LEN)}, samplers)
    pools[pool] = ([next(ids) for _ in range(n_single)], {d: seqs[d]})
  overlap_before: dict = {}
  seqs = _simulate(rng, users(n_overlap),
                   {d: _lengths(rng, n_overlap, 5.0, 2, MAX_LEN) for d in DOMAINS}, samplers,
                   before=overlap_before)
  pools["overlap"] = ([next(ids) for _ in range(n_overlap)], seqs)

  evals: dict = {}
  for direction in DIRECTIONS:
    src, tgt = direction_domains(direction)
    evals[direction] = {}
    for split in SPLITS:
      # Target side: the label plus 1+ hidden earlier target events, so the label's time sits late.
      lengths = {src: _lengths(rng, n_eval, 5.0, 2, MAX_LEN),
                 tgt: _lengths(rng, n_eval, 5.0, 2, MAX_LEN)}
      seqs = _simulate(rng, users(n_eval), lengths, samplers, last_domain=tgt)
      labels = [s[-1] for s in seqs[tgt]]
      evals[direction][split] = ([next(ids) for _ in range(n_eval)], seqs[src], labels)

  raw = RawDataset(items=items, pools=pools, eval=evals, overlap_before=overlap_before)
  return SyntheticWorld(raw=raw, item_topics=item_topics, topic_names=tuple(t.name for t in topics))


def generate(seed: int = 0, scale: float = 1.0, overlap_share: float = 0.3, **kwargs) -> RawDataset:
  """The synthetic `RawDataset`; keyword arguments go to `generate_world`."""
  return generate_world(seed, scale, overlap_share, **kwargs).raw

