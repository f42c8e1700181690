"""Generate the TokoTani shop's data as a PostgreSQL COPY stream.

    python3 generate.py --scale small --seed 42 | psql -X -v ON_ERROR_STOP=1 -d tokotani

Writes users, products, orders, order_items and sessions as ``COPY ... FROM stdin`` blocks,
in one transaction, then moves every id sequence past the loaded ids (``setval``) so that
the app's later inserts work. The schema is the app's first migration,
``sandbox/app/prisma/migrations/20240115093000_init/migration.sql`` (``npm run migrate``); load it
first. The same seed and scale always give the same bytes.

Python 3 standard library only: this runs in bare Debian containers.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import unicodedata
from collections.abc import Iterator

# Approximate size on disk once loaded (tables and indexes), in MB; the scale factor is that number.
SCALES = {"tiny": 1.0, "small": 20.0, "medium": 200.0, "large": 1000.0}

# Rows per unit of scale factor (about 1 MB on disk). Order items come with the orders, about 3 per order.
ROWS_PER_UNIT = {"users": 500, "products": 70, "orders": 1530, "sessions": 390}
ITEMS_PER_ORDER = (1, 5)

# id sequences to move past the loaded rows: (table, id column).
SEQUENCES = [("users", "id"), ("products", "id"), ("orders", "id"), ("order_items", "id")]
TABLES = ["users", "products", "orders", "order_items", "sessions"]

COLUMNS = {
    "users": "id, email, name, address, phone, created_at",
    "products": "id, sku, name, category, description, price, stock, created_at, updated_at",
    "orders": "id, user_id, status, total, created_at",
    "order_items": "id, order_id, product_id, quantity, unit_price",
    "sessions": 'id, "sessionToken", "userId", expires',
}

# Timestamps: the shop's history runs from EPOCH over HISTORY_SECONDS (fixed, so output is deterministic).
EPOCH = 1_640_995_200  # 2022-01-01 00:00:00 UTC
HISTORY_SECONDS = 3 * 365 * 86_400
CHUNK_CHARS = 4 << 20  # write in chunks of about 4 MiB
ORDERS_PER_BLOCK = 50_000  # orders and their items alternate in blocks of this many orders


def words(text: str, sep: str | None = None) -> tuple[str, ...]:
    """A word list written as one string: split on whitespace, or on sep when entries hold spaces."""
    return tuple(w.strip() for w in text.split(sep))


FIRST_NAMES = words(
    "Agus Budi Joko Slamet Bambang Hendra Rudi Andi Dedi Eko Wahyu Yusuf Rizky Fajar Dimas Bayu Gilang "
    "Ilham Arif Teguh Sri Siti Dewi Ayu Putri Rina Wulan Indah Fitri Nur Lestari Ratna Yuliana Kartika "
    "Intan Maya Nadia Anisa Dian Made Ketut Nyoman Wayan Komang Gede Kadek Putu Ucok Butet Togar Rahmat "
    "Hidayat Ahmad Muhammad Abdul Siswanto Suharti Suparmi Sutrisno Mulyadi Hartono Yohanes Maria "
    "Theresia Fransiskus Cécile José André Zoë Renée Françoise Łukasz Jürgen Ngọc Thảo Désirée Noël"
)
LAST_NAMES = words(
    "Santoso Wijaya Saputra Pratama Hidayat Nugroho Susanto Setiawan Kurniawan Gunawan Hakim Halim "
    "Siregar Nasution Simanjuntak Hutapea Sinaga Lubis Harahap Tanjung Pane Ginting Sembiring Tarigan "
    "Manurung Sitompul Pardede Situmorang Wibowo Purnomo Suryadi Permana Rahayu Maharani Utami Anggraini "
    "Puspitasari Handayani Suryani Sari Kusuma Wardhana Syahputra Effendi Lim Tan Wong Gozali Salim "
    "Tjahjadi Liem Mandagi Pangemanan Rumengan Tumbelaka Tuhuteru Latuconsina Manuputty Pattinama "
    "Haryanto Darmawan Müller Lefèvre Gonçalves Nguyễn Åström Dvořák Ñúñez"
)
EMAIL_DOMAINS = ("gmail.com", "yahoo.co.id", "yahoo.com", "outlook.com", "hotmail.com", "tokotani.id", "ymail.com")
STREET_PREFIXES = ("Jl.", "Jalan", "Gg.", "Jl. Raya", "Komplek", "Perum")
STREETS = words(
    "Merdeka|Sudirman|Thamrin|Diponegoro|Gatot Subroto|Ahmad Yani|Pahlawan|Veteran|Pemuda|Kartini|"
    "Gajah Mada|Hayam Wuruk|Majapahit|Sisingamangaraja|Imam Bonjol|Cendrawasih|Melati|Mawar|Anggrek|"
    "Kenanga|Flamboyan|Teuku Umar|Cut Nyak Dien|Pattimura|Hasanuddin|Juanda|Siliwangi|Padjadjaran|"
    "Asia Afrika|Braga|Dago|Kaliurang|Malioboro|Pandanaran|Basuki Rahmat|Darmo|Tunjungan|Mastrip|"
    "Sawah Besar|Kebon Jeruk|Raya Bogor|Kenari|Kemuning|Cempaka|Pelita|Perintis Kemerdekaan",
    "|",
)
KELURAHAN = words(
    "Sukamaju|Sukajadi|Mekarsari|Sidomulyo|Karanganyar|Tegalrejo|Sumbersari|Kedungwaru|Tanjungsari|"
    "Ciputat|Cibubur|Cempaka Putih|Kebayoran Lama|Pasar Minggu|Lowokwaru|Banyumanik|Jebres|Gondokusuman|"
    "Kotabaru|Bojongsoang|Cilandak|Sukabumi|Kalideres|Pesanggrahan|Jatinegara|Medan Baru|Ilir Barat|"
    "Ulu Gedong",
    "|",
)
CITIES = (
    ("Jakarta Selatan", "DKI Jakarta", "12"),
    ("Jakarta Timur", "DKI Jakarta", "13"),
    ("Bandung", "Jawa Barat", "40"),
    ("Bogor", "Jawa Barat", "16"),
    ("Garut", "Jawa Barat", "44"),
    ("Semarang", "Jawa Tengah", "50"),
    ("Surakarta", "Jawa Tengah", "57"),
    ("Magelang", "Jawa Tengah", "56"),
    ("Yogyakarta", "DI Yogyakarta", "55"),
    ("Sleman", "DI Yogyakarta", "55"),
    ("Surabaya", "Jawa Timur", "60"),
    ("Malang", "Jawa Timur", "65"),
    ("Jember", "Jawa Timur", "68"),
    ("Denpasar", "Bali", "80"),
    ("Tabanan", "Bali", "82"),
    ("Medan", "Sumatera Utara", "20"),
    ("Pematangsiantar", "Sumatera Utara", "21"),
    ("Padang", "Sumatera Barat", "25"),
    ("Palembang", "Sumatera Selatan", "30"),
    ("Lampung Tengah", "Lampung", "34"),
    ("Pontianak", "Kalimantan Barat", "78"),
    ("Banjarmasin", "Kalimantan Selatan", "70"),
    ("Makassar", "Sulawesi Selatan", "90"),
    ("Manado", "Sulawesi Utara", "95"),
    ("Ambon", "Maluku", "97"),
    ("Kupang", "Nusa Tenggara Timur", "85"),
    ("Mataram", "Nusa Tenggara Barat", "83"),
)

# Product catalogue: category -> (SKU code, base names, units, price range in rupiah).
CATALOGUE = {
    "Benih": (
        "BNH",
        words(
            "Benih Padi Inpari|Benih Jagung Hibrida|Benih Cabai Rawit|Benih Cabai Merah Keriting|Benih Tomat|"
            "Benih Terong Ungu|Benih Kangkung|Benih Bayam|Benih Sawi Pakcoy|Benih Semangka|Benih Melon|"
            "Benih Mentimun|Benih Bawang Merah|Benih Kacang Panjang|Benih Buncis|Benih Selada Keriting",
            "|",
        ),
        ("gram", "kg", "sachet", "pak"),
        (8_000, 450_000),
    ),
    "Pupuk": (
        "PPK",
        words(
            "Pupuk NPK Mutiara 16-16-16|Pupuk Urea|Pupuk ZA|Pupuk SP-36|Pupuk KCl|Pupuk Organik Granul|"
            "Pupuk Kandang Kambing|Kompos Daun|Pupuk Daun Gandasil|Pupuk Hayati Cair|Dolomit|Pupuk Kalsium Nitrat|"
            "Pupuk MKP|Pupuk Boron|Pupuk NPK Phonska",
            "|",
        ),
        ("kg", "karung", "liter", "botol"),
        (12_000, 950_000),
    ),
    "Perlindungan Tanaman": (
        "PTN",
        words(
            "Insektisida Abamektin|Fungisida Mankozeb|Herbisida Glifosat|Herbisida Paraquat|Fungisida Propineb|"
            "Insektisida Imidakloprid|Perekat Perata|Moluskisida Siput|Rodentisida Tikus|Nematisida Karbofuran|"
            "Insektisida Nabati Mimba|Trichoderma Cair|Beauveria Bassiana",
            "|",
        ),
        ("ml", "liter", "gram", "botol"),
        (18_000, 1_250_000),
    ),
    "Alat Pertanian": (
        "ALT",
        words(
            "Cangkul Baja|Sabit Rumput|Gunting Dahan|Sprayer Elektrik|Sprayer Manual|Selang Irigasi|Ember Cor|"
            "Garpu Tanah|Arit Bergerigi|Gembor Siram|Mulsa Plastik Hitam Perak|Polybag|Paranet|Tali Rafia|"
            "Pompa Air Celup|Timbangan Gantung|Pipa PVC|Sarung Tangan Kebun|Mesin Potong Rumput|Terpal",
            "|",
        ),
        ("unit", "buah", "meter", "roll", "set"),
        (15_000, 4_500_000),
    ),
    "Pakan & Peternakan": (
        "PKN",
        words(
            "Pakan Ayam Petelur|Pakan Ayam Broiler|Konsentrat Sapi|Pakan Ikan Lele|Pakan Ikan Nila|Dedak Padi|"
            "Vitamin Unggas|Probiotik Ternak|Tempat Minum Ayam|Mineral Blok Sapi",
            "|",
        ),
        ("kg", "karung", "sachet", "botol"),
        (9_000, 680_000),
    ),
}
BRANDS = words(
    "Tani Jaya|Agro Makmur|Subur Lestari|Benih Unggul|Petro Hijau|Kujang|Nusa Agro|Kalibaru|Panah Merah|"
    "Cap Kapal|Tunas Harapan|Sumber Tani|Mitra Desa|Bumi Hijau|Sri Rejeki|Sinar Tani|Tani Mandiri",
    "|",
)
ADJECTIVES = words(
    "unggul premium super organik hibrida awet serbaguna praktis ekonomis berkualitas cepat larut "
    "bersertifikat antikarat ringan kokoh efektif andal presisi hemat stabil"
)
NOUNS = words(
    "tanaman lahan sawah kebun polybag bedengan greenhouse hidroponik akar daun batang bunga buah panen "
    "musim petani penyuluh dosis takaran penyemprotan pemupukan persemaian pembibitan irigasi drainase "
    "gulma hama penyakit jamur serangga ulat wereng trips kutu tikus"
)
VERBS = words(
    "meningkatkan menjaga mempercepat mengurangi melindungi memperbaiki menyuburkan memperkuat "
    "mengendalikan mencegah mendukung merangsang menambah memudahkan menghemat"
)

# Description sentences. {a} adjective, {n} noun, {v} verb, {x}/{y}/{z} numbers. A few carry a tab
# (pasted spec tables), a backslash (warehouse bin codes) or a Windows line break.
SENTENCES = (
    "Produk {a} ini cocok untuk {n} dan {n} dengan hasil yang {a}.",
    "Dapat {v} produktivitas {n} hingga {x}% bila digunakan sesuai anjuran.",
    "Gunakan {y} gram per liter air, ulangi setiap {z} hari pada fase {n}.",
    "Telah diuji pada {x} hektar {n} di {c} dan terbukti {v} kualitas {n}.",
    "Kemasan {a} dan {a}, mudah disimpan di tempat kering dan terhindar dari sinar matahari.",
    "Direkomendasikan oleh penyuluh untuk {v} {n} pada musim {m}.",
    "Masa simpan {z} bulan sejak tanggal produksi; nomor registrasi {r}.",
    "Aman bagi {n} bila digunakan dengan dosis {y} ml per tangki {z} liter.",
    "Spesifikasi:\tberat {y} g\tisi {z} unit\tgaransi {x} hari.",
    "Lokasi gudang: RAK-{z}\\{r}.",
    "Catatan pemasok: stok datang setiap {z} minggu.\r\nHubungi admin untuk pembelian di atas {x} unit.",
    "Sangat {a} untuk petani pemula maupun kelompok tani dengan lahan {y} m².",
    "Hasil panen rata-rata naik {x} persen dibanding musim {m} tahun lalu.",
    "Tidak disarankan untuk {n} yang sedang {n}; konsultasikan dengan penyuluh setempat.",
    "Pengiriman ke seluruh Indonesia, estimasi {z} hari kerja dari gudang {c}.",
    "Ulasan pembeli: \u201c{a}, {a}, dan sangat membantu {n} kami\u201d.",
)
SEASONS = ("hujan", "kemarau", "tanam", "panen", "pancaroba")

ORDER_STATUSES = ("delivered",) * 11 + ("shipped",) * 3 + ("paid",) * 2 + ("pending",) * 2 + ("cancelled",)


def copy_escape(value: str) -> str:
    """A text value escaped for COPY's text format: backslash, tab, newline and carriage return."""
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    if "\t" in value:
        value = value.replace("\t", "\\t")
    if "\n" in value:
        value = value.replace("\n", "\\n")
    if "\r" in value:
        value = value.replace("\r", "\\r")
    return value


def ascii_slug(text: str) -> str:
    """Lower-case ASCII for e-mail addresses: accents dropped, other letters removed."""
    decomposed = unicodedata.normalize("NFKD", text.replace("ł", "l").replace("Ł", "L"))
    return "".join(c for c in decomposed if c.isascii() and c.isalnum()).lower()


def timestamp(seconds: int) -> str:
    t = time.gmtime(seconds)
    return "%04d-%02d-%02d %02d:%02d:%02d+00" % t[:6]  # noqa: UP031 (the fast path in a hot loop)


def row_counts(scale_factor: float) -> dict[str, int]:
    """Rows of each table for a scale factor (order_items is about 3 per order, decided while generating)."""
    if scale_factor <= 0:
        raise ValueError(f"the scale factor must be positive, got {scale_factor}")
    return {table: max(1, round(per_unit * scale_factor)) for table, per_unit in ROWS_PER_UNIT.items()}


def _rng(seed: int, part: str) -> random.Random:
    # One stream per table, so that changing one table's generation leaves the others' output alone.
    return random.Random(f"tokotani:{seed}:{part}")  # noqa: S311 (reproducible test data, not secrets)


def _chunks(lines: Iterator[str]) -> Iterator[str]:
    buf: list[str] = []
    size = 0
    for line in lines:
        buf.append(line)
        size += len(line)
        if size >= CHUNK_CHARS:
            yield "".join(buf)
            buf = []
            size = 0
    if buf:
        yield "".join(buf)


def users(seed: int, count: int) -> Iterator[str]:
    rng = _rng(seed, "users")
    r = rng.random
    first_names = [(n, ascii_slug(n)) for n in FIRST_NAMES]
    last_names = [(n, ascii_slug(n)) for n in LAST_NAMES]
    nf, nl, nd = len(first_names), len(last_names), len(EMAIL_DOMAINS)
    ns, nk, nc = len(STREETS), len(KELURAHAN), len(CITIES)
    for uid in range(1, count + 1):
        first, first_slug = first_names[int(r() * nf)]
        last, last_slug = last_names[int(r() * nl)]
        if r() < 0.3:
            middle, _middle_slug = first_names[int(r() * nf)]
            name = f"{first} {middle} {last}"
        else:
            name = f"{first} {last}"
        sep = "._"[int(r() * 2)]
        email = f"{first_slug}{sep}{last_slug}{uid}@{EMAIL_DOMAINS[int(r() * nd)]}"
        city, province, postal = CITIES[int(r() * nc)]
        street = f"{STREET_PREFIXES[int(r() * 6)]} {STREETS[int(r() * ns)]}"
        # Street and place names hold no tab or backslash: the line breaks are written pre-escaped.
        address = (
            f"{street} No. {int(r() * 250) + 1}, RT {int(r() * 15) + 1:02d}/RW {int(r() * 12) + 1:02d}\\n"
            f"Kel. {KELURAHAN[int(r() * nk)]}, {city}\\n{province} {postal}{int(r() * 1000):03d}"
        )
        phone = (
            "\\N"
            if r() < 0.06
            else f"+62 8{int(r() * 9) + 1}{int(r() * 10)}-{int(r() * 10000):04d}-{int(r() * 100000):05d}"
        )
        created = timestamp(EPOCH + int(r() * HISTORY_SECONDS))
        yield f"{uid}\t{email}\t{copy_escape(name)}\t{address}\t{phone}\t{created}\n"


def _description(rng: random.Random, city_names: tuple[str, ...]) -> str:
    r = rng.random
    na, nn, nv, ns, nc = len(ADJECTIVES), len(NOUNS), len(VERBS), len(SENTENCES), len(city_names)
    paragraphs = []
    for _sentence in range(1 + int(r() * 2)):
        sentences = []
        for _word in range(2 + int(r() * 4)):
            template = SENTENCES[int(r() * ns)]
            sentences.append(
                template.replace("{a}", ADJECTIVES[int(r() * na)], 1)
                .replace("{a}", ADJECTIVES[int(r() * na)])
                .replace("{n}", NOUNS[int(r() * nn)], 1)
                .replace("{n}", NOUNS[int(r() * nn)])
                .replace("{v}", VERBS[int(r() * nv)])
                .replace("{x}", str(int(r() * 95) + 5))
                .replace("{y}", str(int(r() * 2000) + 1))
                .replace("{z}", str(int(r() * 36) + 1))
                .replace("{c}", city_names[int(r() * nc)])
                .replace("{m}", SEASONS[int(r() * 5)])
                .replace("{r}", f"{int(r() * 0xFFFFFF):06X}")
            )
        paragraphs.append(" ".join(sentences))
    return "\n\n".join(paragraphs)


def products(seed: int, count: int, prices: list[int]) -> Iterator[str]:
    """Product rows; appends each product's price (whole rupiah) to prices, which orders use."""
    rng = _rng(seed, "products")
    r = rng.random
    categories = [(cat, code, names, units, bounds) for cat, (code, names, units, bounds) in CATALOGUE.items()]
    city_names = tuple(c[0] for c in CITIES)
    nb = len(BRANDS)
    for pid in range(1, count + 1):
        category, code, names, units, (low, high) = categories[int(r() * len(categories))]
        base = names[int(r() * len(names))]
        unit = units[int(r() * len(units))]
        size = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)[int(r() * 10)]
        name = f"{base} {BRANDS[int(r() * nb)]} {size} {unit}"
        price = (low + int(r() * (high - low))) // 500 * 500
        prices.append(price)
        description = copy_escape(_description(rng, city_names))
        created_s = EPOCH + int(r() * HISTORY_SECONDS // 2)
        updated_s = created_s + int(r() * HISTORY_SECONDS // 2)
        yield (
            f"{pid}\t{code}-{pid:07d}\t{copy_escape(name)}\t{category}\t{description}\t{price}.00\t"
            f"{int(r() * 5000)}\t{timestamp(created_s)}\t{timestamp(updated_s)}\n"
        )


def orders_and_items(seed: int, count: int, prices: list[int], n_users: int) -> Iterator[tuple[str, list[str]]]:
    """(table, lines) blocks: orders_per_block orders, then their items, alternating (items follow their orders)."""
    rng = _rng(seed, "orders")
    r = rng.random
    n_products = len(prices)
    lo, hi = ITEMS_PER_ORDER
    span = hi - lo + 1
    ns = len(ORDER_STATUSES)
    item_id = 0
    for block_start in range(1, count + 1, ORDERS_PER_BLOCK):
        order_lines: list[str] = []
        item_lines: list[str] = []
        for oid in range(block_start, min(block_start + ORDERS_PER_BLOCK, count + 1)):
            total = 0
            for _item in range(lo + int(r() * span)):
                item_id += 1
                product = int(r() * n_products)
                quantity = 1 + int(r() * r() * 20)
                price = prices[product]
                total += quantity * price
                item_lines.append(f"{item_id}\t{oid}\t{product + 1}\t{quantity}\t{price}.00\n")
            created = timestamp(EPOCH + int(r() * HISTORY_SECONDS))
            order_lines.append(
                f"{oid}\t{int(r() * n_users) + 1}\t{ORDER_STATUSES[int(r() * ns)]}\t{total}.00\t{created}\n"
            )
        yield "orders", order_lines
        yield "order_items", item_lines


def sessions(seed: int, count: int, n_users: int) -> Iterator[str]:
    rng = _rng(seed, "sessions")
    r = rng.random
    bits = rng.getrandbits
    for _row in range(count):
        # cuid-like id, 64 hex characters of session token, expiry within 30 days of the login.
        sid = f"c{bits(96):024x}"
        token = f"{bits(256):064x}"
        expires = timestamp(EPOCH + int(r() * HISTORY_SECONDS) + 30 * 86_400)
        yield f"{sid}\t{token}\t{int(r() * n_users) + 1}\t{expires}\n"


def _copy_block(table: str, lines) -> Iterator[str]:
    yield f"COPY {table} ({COLUMNS[table]}) FROM stdin;\n"
    yield from _chunks(iter(lines))
    yield "\\.\n"


def sql_stream(scale_factor: float, seed: int, truncate: bool = False) -> Iterator[str]:
    """The whole SQL script, as text chunks of up to a few MiB."""
    counts = row_counts(scale_factor)
    yield (
        f"-- TokoTani shop data: scale factor {scale_factor:g}, seed {seed}, generated by sandbox/data/generate.py\n"
        "SET client_encoding = 'UTF8';\n"
        "SET synchronous_commit = off;\n"
        "BEGIN;\n"
    )
    if truncate:
        yield f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE;\n"
    prices: list[int] = []
    yield from _copy_block("users", users(seed, counts["users"]))
    yield from _copy_block("products", products(seed, counts["products"], prices))
    for table, lines in orders_and_items(seed, counts["orders"], prices, counts["users"]):
        yield from _copy_block(table, lines)
    yield from _copy_block("sessions", sessions(seed, counts["sessions"], counts["users"]))
    # Table and column names are the constants above, not input.
    setvals = ",\n       ".join(
        f"setval(pg_get_serial_sequence('{table}', '{column}'), "  # noqa: S608
        f"(SELECT coalesce(max({column}), 0) + 1 FROM {table}), false) AS {table}_{column}"
        for table, column in SEQUENCES
    )
    yield f"SELECT {setvals};\n"
    yield "COMMIT;\n"
    yield f"ANALYZE {', '.join(TABLES)};\n"


def write_stream(out, scale_factor: float, seed: int, truncate: bool = False) -> int:
    """Write the SQL script to a binary stream as UTF-8; returns the number of bytes written."""
    written = 0
    for chunk in sql_stream(scale_factor, seed, truncate):
        data = chunk.encode("utf-8")
        out.write(data)
        written += len(data)
    return written


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Write the TokoTani shop data as a COPY stream for psql (load the app's migrations first)."
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--scale",
        choices=SCALES,
        default="small",
        help="tiny ~1 MB, small ~20 MB, medium ~200 MB, large ~1 GB on disk once loaded (default: small)",
    )
    size.add_argument(
        "--scale-factor", type=float, help="size as a number: about this many MB on disk once loaded (1 = tiny)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed; the same seed and scale give the same data")
    parser.add_argument(
        "--truncate", action="store_true", help="empty the shop's tables first (TRUNCATE ... RESTART IDENTITY CASCADE)"
    )
    args = parser.parse_args(argv)
    if args.scale_factor is None:
        args.scale_factor = SCALES[args.scale]
    elif args.scale_factor <= 0:
        parser.error("--scale-factor must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        write_stream(sys.stdout.buffer, args.scale_factor, args.seed, args.truncate)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        # psql stopped reading (it failed, and its error is the one that matters). Point stdout
        # at /dev/null so that the interpreter's final flush does not fail a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.stderr.write("generate.py: the reader closed the pipe before the end of the data\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
