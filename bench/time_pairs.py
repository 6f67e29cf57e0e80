"""Facts that change over time: articles written here, to tune and measure answers by date.

    python bench/time_pairs.py [--family A|B|both] [--topics 40] [--seed 7] [--jsonl OUT]

Each topic is one fact about one made-up place, company, team or product (a mayor, a chief executive,
a coach, a price, a rate) told by an older article and changed by a newer one, years apart. The older
article states the fact in the question's own words ("Jane Okafor is the mayor of Lowmoor"); the newer
one tells the change in other words ("Tom Brandt was sworn in on Monday as Lowmoor's new mayor"), so
words alone usually pick the older. Beside them: a newest article about the same place that does not
state the fact (a library reopens), and a newer article stating the same kind of fact about another
place with a similar name (Highmoor's mayor), which must not answer for Lowmoor.

Questions per topic: the present ("Who is the mayor of Lowmoor?", the newer article's value is right),
the older article's year named ("Who was the mayor of Lowmoor in 2018?", the older value), and the
newer article's year named (the newer value).

Family A (tuning) and family B (held out: other templates, names and filler) share no sentence.
Prints, for each family: the share of present questions answered from the newer article and holding its
value, the same for the older year and the newer year, the share of present questions whose answer
names the other place, and `answer.newer` on the older-year questions; with time's re-ranking and
without it (the answer model's own choice). Uses the packaged model (real embeddings), in process.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

FIRST = ["Jane", "Tom", "Amara", "Lukas", "Priya", "Owen", "Mei", "Diego", "Hannah", "Kwame", "Sofia", "Ravi",
         "Elena", "Marcus", "Ingrid", "Tariq", "Chloe", "Bernard", "Yuki", "Fatima", "Gareth", "Nadia", "Felix",
         "Leila", "Henrik", "Carmen", "Dmitri", "Aisha", "Colin", "Rosa"]
LAST = ["Okafor", "Brandt", "Lindqvist", "Moreau", "Castellano", "Whitfield", "Nakamura", "Osei", "Petrova",
        "Halloran", "Fitzgerald", "Adeyemi", "Kowalski", "Delacroix", "Thorne", "Ibarra", "Sandoval", "Achebe",
        "Varga", "Rasmussen", "Quigley", "Mbeki", "Holm", "Ferreira", "Duchene", "Abernathy", "Szabo", "Lund"]
PLACE_A = ["Lowmoor", "Ashcombe", "Redfield", "Glenbury", "Wexford Vale", "Marlow Ridge", "Coldharbour", "Eastwick",
           "Stonebridge", "Fernhill", "Kingsmere", "Oakhaven", "Brackwater", "Thornby", "Linwood", "Pennick"]
PLACE_B = ["Saltmarsh", "Hollowell", "Brindle Cross", "Dunmore", "Harrowgate", "Kestrel Bay", "Millbrook", "Northam",
           "Pinecrest", "Quarry Hill", "Rookwood", "Silverdale", "Tarnside", "Upton Lees", "Westerby", "Yarrow"]
TWIN = {"Low": "High", "Ash": "Oak", "Red": "Blue", "Glen": "Dale", "East": "West", "Stone": "Clay", "Fern": "Moss",
        "King": "Queen", "Oak": "Elm", "Thorn": "Briar", "Lin": "Ash", "Pen": "Tre", "Salt": "Sand", "Hollow": "Deep",
        "Dun": "Ben", "Harrow": "Barrow", "Kestrel": "Falcon", "Mill": "Kiln", "North": "South", "Pine": "Cedar",
        "Rook": "Crow", "Silver": "Golden", "Tarn": "Mere", "Upton": "Downton", "Wester": "Easter", "Yarrow": "Sorrel",
        "Brack": "Black", "Wex": "Wix", "Marlow": "Barlow", "Cold": "Warm", "Quarry": "Chalk", "Brindle": "Bramble",
        "Mar": "Bar"}
COMPANY_A = ["Veltrix", "Corvane", "Lumisol", "Quantara", "Brightwell Foods", "Norvik Shipping", "Halcyon Air",
             "Tessaly Pharma", "Orrin Motors", "Kelpie Telecom", "Mistral Bank", "Zephyr Rail"]
COMPANY_B = ["Arbolux", "Pellara", "Stratwick", "Dovetail Mining", "Caskfield Breweries", "Ostrava Steel",
             "Ravensholt Energy", "Marigold Retail", "Tidewater Logistics", "Fenwick Insurance", "Solenne Media",
             "Glasswing Software"]


def twin(place: str) -> str:
    """A place with a similar name: Lowmoor -> Highmoor."""
    for a, b in TWIN.items():
        if place.startswith(a):
            return b + place[len(a):]
    return "New " + place


@dataclass
class Topic:
    kind: str  # mayor, ceo, coach, price, rate
    subject: str  # the place, company, team or product
    old: str  # the value before
    new: str  # the value after
    other: str  # the twin's value (another place's fact)


def person(rng: random.Random, used: set[str]) -> str:
    while True:
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        if name not in used:
            used.add(name)
            return name


def money(rng: random.Random, lo: int, hi: int) -> str:
    return f"${rng.randint(lo, hi)}.{rng.choice(['00', '50', '25', '75', '95'])}"


# --- templates: (old fact, new fact, twin fact, unrelated newest, questions), per kind and family -------------

A = {
    "mayor": dict(
        old=["{old} is the mayor of {s}. As mayor of {s}, {old} oversees a town of about {n},000 people.",
             "The mayor of {s}, {old}, said the council would review parking charges this spring."],
        new=["{new} was sworn in as mayor on {day} at the town hall, taking over from {old} after winning the "
             "vote by {m} ballots.",
             "{new} promised to reopen the shuttered swimming baths within a year of taking office."],
        twin=["{other} was sworn in on {day} as the new mayor of {t}, the neighbouring town's council said."],
        q_present="Who is the mayor of {s}?", q_past="Who was the mayor of {s} in {year}?",
        title_old="{s} council sets out plans for the high street",
        title_new="{new} takes office in {s}", title_twin="{t} swears in its mayor",
        title_other="{s} library reopens after two-year renovation",
        other=["The library in {s} reopened on {day} after a two-year renovation that cost {n} million dollars.",
               "Visitors queued from early morning, and the reading room was full by noon."]),
    "ceo": dict(
        old=["{old} is the chief executive of {s}. {old} has led {s} through a period of rapid growth, "
             "the company's annual report said.",
             "As chief executive, {old} oversees about {n},000 employees in twelve countries."],
        new=["{s}'s board named {new} to lead the company on {day}, replacing {old}, who stepped down after "
             "a dispute with shareholders.",
             "{new}, who becomes the company's fourth chief executive, joined from a rival firm."],
        twin=["{t}'s board named {other} as its new chief executive on {day}."],
        q_present="Who is the chief executive of {s}?", q_past="Who was the chief executive of {s} in {year}?",
        title_old="{s} reports higher annual profit", title_new="{s} names {new} to the top job",
        title_twin="{t} appoints new boss", title_other="{s} opens a new warehouse",
        other=["{s} opened a new warehouse near the port on {day}, creating about {m} jobs.",
               "The building is the company's largest and runs on solar power."]),
    "coach": dict(
        old=["{old} is the head coach of the {s} Rovers. Under head coach {old}, the {s} Rovers reached the "
             "cup semi-final.",
             "The Rovers play their home games at the old riverside ground."],
        new=["The {s} Rovers handed the job to {new} on {day}, a week after parting ways with {old}.",
             "{new} becomes the club's head coach on a three-year contract and will lead training from Monday."],
        twin=["The {t} Rovers handed their coaching job to {other} on {day}."],
        q_present="Who is the head coach of the {s} Rovers?",
        q_past="Who was the head coach of the {s} Rovers in {year}?",
        title_old="{s} Rovers march on in the cup", title_new="{s} Rovers turn to {new}",
        title_twin="{t} Rovers make a change", title_other="{s} Rovers unveil new kit",
        other=["The {s} Rovers unveiled a new home kit on {day}, in green and white hoops.",
               "Fans can buy the shirts from the club shop next month."]),
    "price": dict(
        old=["The price of a monthly {s} pass is {old}. A monthly {s} pass costs {old} for adults, with discounts "
             "for students.",
             "Commuters said the pass was good value compared with daily tickets."],
        new=["From {day}, riders will pay {new} a month for the pass, up from {old}, the operator announced.",
             "The operator blamed higher energy costs for the increase."],
        twin=["Riders on the {t} line will pay {other} a month from {day}."],
        q_present="How much does a monthly {s} pass cost?",
        q_past="How much did a monthly {s} pass cost in {year}?",
        title_old="{s} pass remains popular with commuters", title_new="{s} fares go up",
        title_twin="{t} fares change", title_other="{s} line gets new trains",
        other=["New trains entered service on the {s} line on {day}, with more seats and free wifi.",
               "The operator said journeys would be quieter and smoother."]),
}

B = {
    "mayor": dict(
        old=["{s} mayor {old} opened the harvest fair on Saturday. The mayor of {s} thanked volunteers and "
             "local farmers.",
             "The fair drew about {n},000 visitors, organisers said."],
        new=["Voters in {s} chose {new} as their mayor on {day}, ending {old}'s eight years in office.",
             "{new} said fixing the roads would come first."],
        twin=["Voters in {t} chose {other} as their mayor on {day}."],
        q_present="Who is {s}'s mayor?", q_past="Who was {s}'s mayor in {year}?",
        title_old="Harvest fair returns to {s}", title_new="{s} elects {new}",
        title_twin="{t} election result", title_other="{s} school wins science prize",
        other=["Pupils from {s} won a national science prize on {day} for a river-cleaning robot.",
               "Their teacher said the team had worked on it for two years."]),
    "ceo": dict(
        old=["{old}, chief executive of {s}, told investors the company expected sales to grow. {s}'s chief "
             "executive spoke at the annual meeting.",
             "Shares rose {m} percent after the meeting."],
        new=["{s} said on {day} that {new} would succeed {old} at the helm with immediate effect.",
             "{new}, the new chief executive, previously ran the group's European business."],
        twin=["{t} said on {day} that {other} would take the helm."],
        q_present="Who runs {s}?", q_past="Who ran {s} in {year}?",
        title_old="{s} upbeat on sales", title_new="{s} changes leadership",
        title_twin="{t} leadership news", title_other="{s} recalls a batch of products",
        other=["{s} recalled a batch of products on {day} after a labelling error.",
               "No injuries were reported, the company said."]),
    "coach": dict(
        old=["{s} United manager {old} praised the players after a {m}-1 win. The manager of {s} United said the "
             "squad was the best in years.",
             "The club sits third in the league."],
        new=["{s} United appointed {new} on {day}, following the departure of {old} last month.",
             "{new} takes over as manager after a successful spell abroad."],
        twin=["{t} United appointed {other} on {day}."],
        q_present="Who manages {s} United?", q_past="Who managed {s} United in {year}?",
        title_old="{s} United win again", title_new="{s} United appoint {new}",
        title_twin="{t} United news", title_other="{s} United stadium expansion approved",
        other=["Plans to expand the {s} United stadium were approved on {day}.",
               "Capacity will rise by about {n},000 seats."]),
    "rate": dict(
        old=["The {s} Reserve Bank kept its main interest rate at {old}. The {s} Reserve Bank's interest rate has "
             "stayed at {old} for a year.",
             "Economists had expected no change."],
        new=["On {day} the central bank of {s} moved borrowing costs to {new}, from {old}.",
             "It is the first change to the Reserve Bank's interest rate in a year; officials pointed to rising "
             "prices."],
        twin=["The central bank of {t} set borrowing costs at {other} on {day}."],
        q_present="What is the {s} Reserve Bank's interest rate?",
        q_past="What was the {s} Reserve Bank's interest rate in {year}?",
        title_old="{s} Reserve Bank holds steady", title_new="{s} central bank acts",
        title_twin="{t} central bank decision", title_other="{s} Reserve Bank opens a museum",
        other=["The {s} Reserve Bank opened a money museum on {day}.",
               "Entry is free for children."]),
}

FILLER = {
    "A": ["Local businesses in {s} have welcomed the news, according to the chamber of commerce.",
          "A public meeting is planned at the {s} community centre later in the month.",
          "Critics said the decision had been rushed and asked for a review.",
          "The announcement came after {m} weeks of speculation in the local press.",
          "{s} has a population of roughly {n},000 and a busy weekly market.",
          "Traffic on the ring road was heavier than usual on {day} morning.",
          "A spokesperson for the regional council said the timetable was unchanged.",
          "Several residents wrote to the {s} Echo to share their views.",
          "The weather stayed dry for most of the week, forecasters said.",
          "Officials expect to publish a full report before the summer.",
          "The opposition group on the council called for more consultation.",
          "Shops along the high street reported a good weekend for trade.",
          "Volunteers from {s} Rotary helped at the event.",
          "The last comparable change came more than a decade ago.",
          "Union representatives said they would study the details closely."],
    "B": ["Residents of {s} gave the news a mixed reception.",
          "More details are expected in the coming weeks.",
          "The story was first reported by the {s} Courier.",
          "Officials declined to comment further on {day}.",
          "About {n} people attended a briefing at the civic hall.",
          "Analysts said the move had been widely expected for months.",
          "A petition on the subject has gathered {m},000 signatures.",
          "The ferry service to the islands runs as normal.",
          "Rain is forecast for the weekend across the region.",
          "A youth orchestra played at the opening of the new square.",
          "Neighbouring councils are watching the outcome closely.",
          "The local hospital trust reported shorter waiting times.",
          "Bus routes around {s} will change in the autumn.",
          "A survey found most residents felt optimistic about the year ahead.",
          "Police reported a quiet night in the town centre."],
}


def make(family: str, topics: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Articles (.jsonl rows) and questions ({"q", "want": article id, "value", "kind": present/old/new})."""
    rng = random.Random(f"{seed}-{family}")
    templates = A if family == "A" else B
    places = PLACE_A if family == "A" else PLACE_B
    companies = COMPANY_A if family == "A" else COMPANY_B
    used: set[str] = set()
    articles, questions = [], []
    kinds = list(templates)
    for i in range(topics):
        kind = kinds[i % len(kinds)]
        t = templates[kind]
        pool = companies if kind == "ceo" else places
        subject = pool[(i // len(kinds)) % len(pool)] + ("" if i < len(kinds) * len(pool) else f" {i}")
        other_subject = twin(subject) if kind != "ceo" else subject.split()[0] + "ex"
        if kind == "price":
            old, new, other = money(rng, 40, 80), money(rng, 81, 120), money(rng, 40, 120)
        elif kind == "rate":
            old, new, other = (f"{rng.randint(1, 4)}.{rng.choice([0, 25, 5, 75])}%".replace(".0%", "%"),
                               f"{rng.randint(5, 8)}.{rng.choice([0, 25, 5, 75])}%".replace(".0%", "%"),
                               f"{rng.randint(2, 9)}%")
        else:
            old, new, other = person(rng, used), person(rng, used), person(rng, used)
        y_old, y_new = rng.randint(2015, 2019), rng.randint(2021, 2025)
        d_old = f"{y_old}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        d_new = f"{y_new}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        d_twin = f"{y_new}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        d_other = f"{min(y_new + 1, 2026)}-{rng.randint(1, 11):02d}-{rng.randint(1, 28):02d}"
        fill = {"s": subject, "t": other_subject, "old": old, "new": new, "other": other,
                "n": rng.randint(5, 90), "m": rng.randint(2, 9),
                "day": rng.choice(["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"])}
        filler = FILLER[family]

        def body(lines: list[str], about: str | None = None) -> str:
            before, *after = rng.sample(filler, 4)
            mine = {**fill, "s": about} if about else fill  # the twin's filler names the twin
            return "\n\n".join([before.format(**mine), *(x.format(**fill) for x in lines),
                                *(x.format(**mine) for x in after)])

        slug = f"{family.lower()}{i}-{kind}"
        rows = [
            (f"{slug}-old", t["title_old"], body(t["old"]), d_old),
            (f"{slug}-new", t["title_new"], body(t["new"]), d_new),
            (f"{slug}-twin", t["title_twin"], body(t["twin"], other_subject), d_twin),
            (f"{slug}-other", t["title_other"], body(t["other"]), d_other),
        ]
        for aid, title, text, day in rows:
            articles.append({"id": aid, "title": title.format(**fill), "text": text, "published": day,
                             "source": "Bench Gazette"})
        questions += [
            {"q": t["q_present"].format(**fill), "want": f"{slug}-new", "value": new, "kind": "present",
             "twin": f"{slug}-twin"},
            {"q": t["q_past"].format(**fill, year=y_old), "want": f"{slug}-old", "value": old, "kind": "old",
             "newer": f"{slug}-new"},
            {"q": t["q_past"].format(**fill, year=y_new), "want": f"{slug}-new", "value": new, "kind": "new"},
        ]
    return articles, questions


def measure(searcher, questions: list[dict]) -> dict[str, float]:
    """Per kind of question: the share answered from the wanted article with its value."""
    from collections import defaultdict

    right, total = defaultdict(int), defaultdict(int)
    took = []
    for item in questions:
        t0 = time.perf_counter()
        got = searcher.ask(item["q"], 5)
        took.append(time.perf_counter() - t0)
        a = got.answer
        total[item["kind"]] += 1
        ok = a is not None and a.citation.article_id == item["want"] and item["value"] in a.text
        right[item["kind"]] += ok
        if item["kind"] == "present":
            total["twin"] += 1
            right["twin"] += a is not None and a.citation.article_id == item["twin"]
            total["answered"] += 1
            right["answered"] += a is not None
        if item["kind"] == "old":
            total["newer_notice"] += 1
            right["newer_notice"] += a is not None and a.newer is not None and \
                a.newer.citation.article_id == item["newer"]
    out = {k: right[k] / total[k] for k in total}
    out["ms"] = 1000 * sorted(took)[len(took) // 2]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=["A", "B", "both"], default="both")
    ap.add_argument("--topics", type=int, default=40)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--jsonl", type=Path, help="also write the articles here")
    ap.add_argument("--floor", type=float, action="append", help="try these FLOORs (default: the module's)")
    args = ap.parse_args()

    from qa.embed.model import DEFAULT_MODEL
    from qa.ingest.articles import article_from_json
    from qa.search import time as when
    from qa.web.service import Service

    families = ["A", "B"] if args.family == "both" else [args.family]
    for family in families:
        articles, questions = make(family, args.topics, args.seed)
        if args.jsonl:
            out = args.jsonl.with_name(f"{args.jsonl.stem}-{family}{args.jsonl.suffix}")
            out.write_text("".join(json.dumps(a) + "\n" for a in articles))
        with tempfile.TemporaryDirectory(prefix="qa-time-") as tmp:
            svc = Service(tmp, DEFAULT_MODEL, "openvino-int8")
            t0 = time.perf_counter()
            with svc.writer() as w:
                from qa.ingest.pipeline import add_articles

                add_articles(w, svc.embedder, [article_from_json(a, "bench") for a in articles])
            searcher = svc.searcher(wait=True)
            print(f"family {family}: {len(articles)} articles, {len(questions)} questions, "
                  f"{searcher.index.passage_count} passages, built in {time.perf_counter() - t0:.1f} s")
            real = when.by_time
            when.by_time = lambda q, question, c, best, row, conf, *a, **k: when.ByTime(best, row, conf)
            try:
                base = measure(searcher, questions)
            finally:
                when.by_time = real
            print(f"  words alone (the answer model's choice): {fmt(base)}")
            floors = args.floor or [when.FLOOR]
            keep = when.FLOOR
            for f in floors:
                when.FLOOR = f
                print(f"  by time, FLOOR {f:g}:                    {fmt(measure(searcher, questions))}")
            when.FLOOR = keep


def fmt(m: dict[str, float]) -> str:
    names = {"present": "present->newer", "old": "older year->older", "new": "newer year->newer",
             "twin": "present->other place", "answered": "present answered", "newer_notice": "older year: newer notice"}
    return ", ".join(f"{names[k]} {m[k]:.2f}" for k in names if k in m) + f"; {m['ms']:.1f} ms a question (median)"


if __name__ == "__main__":
    main()
