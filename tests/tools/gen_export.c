/*
 * gen_export.c — deterministic generator of HR export CSV files for tests,
 * the demo and benchmarks.
 *
 *   gen_export --employees N --seed S [--crlf] [--bom]   > first.csv
 *   gen_export --seed S --changes-from first.csv [--crlf] [--bom] > second.csv
 *
 * The first form prints N employees: employee_id (E10001…), first_name,
 * last_name, preferred_name (sometimes), title (now and then with commas and
 * quotes, so it needs CSV quoting), department (Engineering, Sales,
 * Marketing, Finance, People, Support, Legal, Operations), location,
 * manager_id (always an id in the file; E10001 is the CEO and has none),
 * employment_type and start_date (YYYY-MM-DD).  Names include diacritics
 * (José, Åsa, Björn, Øyvind, Strauß, Łukasz…).  Every employee's uid — first
 * letter of first_name plus last_name, ASCII-folded and lower-cased, as the
 * default mapping builds it — is unique, so no name collision occurs.
 *
 * The second form prints the next export of an existing one: about 3% of the
 * people who manage nobody are gone (terminations), about 5% changed title
 * or department (a move also changes manager), two changed last name (uids
 * still unique), about 5% are new hires with start dates in the future, and
 * everyone else is unchanged.  Columns and row order of the input are kept;
 * new hires come last.
 *
 * The same arguments always print the same bytes.  --crlf ends lines with
 * CRLF, --bom starts the file with a UTF-8 byte order mark.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/err.h"
#include "ingest/csv_reader.h"
#include "processors/ascii_fold.h"

#define NDEPTS 8
#define NCOLS  10

/* ---- deterministic randomness (splitmix64) ------------------------------- */

static uint64_t rng_state;

static uint64_t rng_next(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static size_t rng_below(size_t n)
{
	return (size_t)(rng_next() % n);
}

static bool rng_chance(unsigned percent)
{
	return rng_below(100) < percent;
}

#define PICK(arr) (arr[rng_below(sizeof(arr) / sizeof(arr[0]))])

/* ---- data ---------------------------------------------------------------- */

static const char *const first_names[] = {
    "Ada",         "Alan",       "Grace",     "José",     "Åsa",      "Björn",
    "Øyvind",      "Zoë",        "Chloé",     "Renée",    "François", "Jürgen",
    "Søren",       "Łukasz",     "Mónica",    "Inés",     "Ngozi",    "Aarav",
    "Mei",         "Hiroshi",    "Fatima",    "Priya",    "Kwame",    "Sofia",
    "Lars",        "Ingrid",     "Mateo",     "Lucía",    "Noah",     "Emma",
    "Liam",        "Olivia",     "Ethan",     "Mia",      "Lena",     "Jonas",
    "Astrid",      "Nils",       "Elif",      "Emre",     "Yusuf",    "Amara",
    "Wei",         "Aiko",       "Kenji",     "Rahul",    "Anika",    "Tomás",
    "Joaquín",     "Raphaël",    "Hélène",    "Zsófia",   "Dávid",    "Ágnes",
    "Michał",      "Małgorzata", "Siobhán",   "Seán",     "Niamh",    "Úna",
    "Oskar",       "Uma",        "Viktor",    "Xavier",   "Yara",     "Quentin",
    "Ivan",        "Greta",      "Bruno",     "Carmen",   "Dmitri",   "Farid",
    "Hannah",      "Kofi",       "Rosa",      "Tariq",    "Vera",     "Alexander",
    "Katherine",   "Robert",     "Elizabeth", "Jonathan", "Margaret", "Benjamin",
    "Christopher", "Isabelle",   "William",
};

/* First names people often go by a short form of. */
static const char *const nicknames[][2] = {
    {"Alexander", "Alex"}, {"Katherine", "Kate"},    {"Robert", "Bob"},
    {"Elizabeth", "Liz"},  {"Jonathan", "Jon"},      {"Margaret", "Maggie"},
    {"Benjamin", "Ben"},   {"Christopher", "Chris"}, {"Isabelle", "Isa"},
    {"William", "Bill"},   {"Małgorzata", "Gosia"},  {"Dmitri", "Dima"},
};

static const char *const last_names[] = {
    "Lovelace",  "Hopper",    "García",     "Müller",         "Strauß",    "Großmann",
    "Weiß",      "Øvergaard", "Ødegård",    "Åkesson",        "Björklund", "Lindqvist",
    "Nyström",   "Sjöberg",   "Hernández",  "Martínez",       "Núñez",     "Peña",
    "Muñoz",     "Çelik",     "Yılmaz",     "Şahin",          "Nowak",     "Wiśniewski",
    "Dąbrowski", "Kowalczyk", "Dvořák",     "Novák",          "Horváth",   "Kovács",
    "Tóth",      "Nagy",      "O'Brien",    "O'Connor",       "McCarthy",  "Smith",
    "Johnson",   "Williams",  "Brown",      "Jones",          "Miller",    "Davis",
    "Wilson",    "Anderson",  "Taylor",     "Thomas",         "Moore",     "Martin",
    "Jackson",   "Thompson",  "White",      "Harris",         "Clark",     "Lewis",
    "Robinson",  "Walker",    "Young",      "Allen",          "King",      "Wright",
    "Scott",     "Hill",      "Green",      "Adams",          "Baker",     "Nelson",
    "Carter",    "Mitchell",  "Roberts",    "Turner",         "Phillips",  "Campbell",
    "Parker",    "Evans",     "Edwards",    "Collins",        "Stewart",   "Morris",
    "Rogers",    "Reed",      "Cook",       "Morgan",         "Bell",      "Murphy",
    "Bailey",    "Rivera",    "Cooper",     "Richardson",     "Cox",       "Howard",
    "Ward",      "Torres",    "Peterson",   "Gray",           "Ramírez",   "James",
    "Watson",    "Brooks",    "Kelly",      "Sanders",        "Price",     "Bennett",
    "Wood",      "Barnes",    "Ross",       "Henderson",      "Coleman",   "Jenkins",
    "Nakamura",  "Tanaka",    "Suzuki",     "Watanabe",       "Kim",       "Park",
    "Nguyen",    "Tran",      "Singh",      "Patel",          "Sharma",    "Okafor",
    "Adeyemi",   "Mensah",    "Haddad",     "Khalil",         "Rossi",     "Bianchi",
    "Esposito",  "Romano",    "Dubois",     "Lefèvre",        "Moreau",    "Girard",
    "Schröder",  "Schäfer",   "Köhler",     "Jäger",          "Hoffmann",  "Fischer",
    "Becker",    "Wagner",    "Zimmermann", "Krüger",         "Hartmann",  "Lange",
    "Vogel",     "Jensen",    "Hansen",     "Nielsen",        "Pedersen",  "Halvorsen",
    "Bakke",     "Solberg",   "Haugen",     "Johansson",      "Karlsson",  "Eriksson",
    "Larsson",   "Olsson",    "Persson",    "Svensson",       "Virtanen",  "Korhonen",
    "Mäkinen",   "Nieminen",  "Hämäläinen", "Ó Súilleabháin",
};

static const char *const departments[NDEPTS] = {
    "Engineering", "Sales",   "Marketing", "Finance",
    "People",      "Support", "Legal",     "Operations",
};
static const unsigned dept_weight[NDEPTS] = {30, 18, 10, 8, 6, 15, 4, 9};

static const char *const dept_heads[NDEPTS] = {
    "VP Engineering", "VP Sales",        "VP Marketing",    "Chief Financial Officer",
    "Head of People", "Head of Support", "General Counsel", "Head of Operations",
};

static const char *const roles[NDEPTS][6] = {
    {"Software Engineer", "Site Reliability Engineer", "QA Engineer", "Data Engineer",
     "Security Engineer", "Engineering Manager"},
    {"Account Executive", "Sales Development Representative", "Sales Engineer",
     "Account Manager", "Sales Manager", "Sales Operations Analyst"},
    {"Marketing Manager", "Content Strategist", "Product Marketing Manager", "Designer",
     "SEO Specialist", "Events Coordinator"},
    {"Accountant", "Financial Analyst", "Controller", "Payroll Specialist",
     "Tax Specialist", "Treasury Analyst"},
    {"HR Business Partner", "Recruiter", "People Operations Specialist",
     "Learning Specialist", "Recruiting Coordinator", "Compensation Analyst"},
    {"Support Engineer", "Customer Success Manager", "Support Specialist",
     "Technical Writer", "Support Analyst", "Onboarding Specialist"},
    {"Counsel", "Paralegal", "Compliance Officer", "Contracts Manager", "Privacy Analyst",
     "Legal Operations Specialist"},
    {"Office Manager", "IT Administrator", "Procurement Specialist", "Operations Analyst",
     "Facilities Coordinator", "Workplace Specialist"},
};

/* Titles that need CSV quoting: commas, and quotes inside. */
static const char *const quoted_roles[NDEPTS] = {
    "Engineer, Platform",
    "Manager, EMEA Sales",
    "Director, \"Special Projects\"",
    "Analyst, FP&A",
    "Partner, Talent & Culture",
    "Specialist, \"Tier 2\" Support",
    "Counsel, Privacy & Data",
    "Coordinator, Facilities, \"North\" Campus",
};

static const char *const locations[] = {
    "Oslo",   "Stockholm", "Berlin",   "München",   "Zürich",
    "Madrid", "London",    "New York", "São Paulo", "Remote",
};

static const char *const columns[NCOLS] = {
    "employee_id", "first_name", "last_name",  "preferred_name",  "title",
    "department",  "location",   "manager_id", "employment_type", "start_date",
};
enum { C_ID, C_FIRST, C_LAST, C_PREF, C_TITLE, C_DEPT, C_LOC, C_MGR, C_TYPE, C_START };

/* ---- uid uniqueness ------------------------------------------------------- */

typedef struct strset {
	char **items;
	size_t cap; /* power of two */
	size_t len;
} strset_t;

static uint64_t str_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

static void die(const char *msg)
{
	fprintf(stderr, "gen_export: %s\n", msg);
	exit(1);
}

static void *xmalloc(size_t n)
{
	void *p = calloc(1, n ? n : 1);
	if (p == NULL)
		die("out of memory");
	return p;
}

static char *xstrdup(const char *s)
{
	char *p = strdup(s);
	if (p == NULL)
		die("out of memory");
	return p;
}

static bool strset_has(const strset_t *s, const char *k)
{
	if (s->cap == 0)
		return false;
	for (size_t i = str_hash(k) & (s->cap - 1); s->items[i];
	     i = (i + 1) & (s->cap - 1))
		if (strcmp(s->items[i], k) == 0)
			return true;
	return false;
}

static void strset_add(strset_t *s, const char *k)
{
	if ((s->len + 1) * 2 > s->cap) {
		strset_t n = {xmalloc(sizeof(char *) * (s->cap ? s->cap * 2 : 1024)),
		              s->cap ? s->cap * 2 : 1024, 0};
		for (size_t i = 0; i < s->cap; i++)
			if (s->items[i])
				strset_add(&n, s->items[i]);
		for (size_t i = 0; i < s->cap; i++)
			free(s->items[i]);
		free(s->items);
		*s = n;
	}
	size_t i = str_hash(k) & (s->cap - 1);
	while (s->items[i])
		i = (i + 1) & (s->cap - 1);
	s->items[i] = xstrdup(k);
	s->len++;
}

static void strset_fini(strset_t *s)
{
	for (size_t i = 0; i < s->cap; i++)
		free(s->items[i]);
	free(s->items);
}

/* The uid the default mapping derives: first letter + last name, folded. */
static char *uid_of(const char *first, const char *last)
{
	id_buf_t b = ID_BUF_INIT;
	size_t pos = 0, len = strlen(first);
	while (pos < len && b.len == 0) {
		uint32_t cp;
		if (ascii_fold_utf8_next(first, len, &pos, &cp) != 0)
			die("invalid UTF-8 in a first name");
		for (const char *f = ascii_fold_codepoint(cp); *f; f++) {
			char c = *f >= 'A' && *f <= 'Z' ? (char)(*f - 'A' + 'a') : *f;
			if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
				id_buf_append_u8(&b, (uint8_t)c);
		}
	}
	if (ascii_fold_alnum_append(&b, last, NULL) != 0)
		die("invalid UTF-8 in a last name");
	id_buf_append_u8(&b, 0);
	return (char *)b.data;
}

/* Picks a last name (double-barrelled when the single ones run out) that
 * gives first a uid not in used, and records it. */
static char *pick_last_name(const char *first, strset_t *used)
{
	char buf[256];
	for (int attempt = 0; attempt < 100000; attempt++) {
		if (attempt < 60)
			snprintf(buf, sizeof(buf), "%s", PICK(last_names));
		else
			snprintf(buf, sizeof(buf), "%s-%s", PICK(last_names),
			         PICK(last_names));
		char *uid = uid_of(first, buf);
		bool taken = strset_has(used, uid);
		if (!taken)
			strset_add(used, uid);
		free(uid);
		if (!taken)
			return xstrdup(buf);
	}
	die("cannot find a unique name; use fewer employees");
	return NULL;
}

/* ---- employees ------------------------------------------------------------- */

typedef struct employee {
	char *v[NCOLS];   /* known columns; NULL = empty */
	id_attrs_t extra; /* unknown columns of an input file */
	int dept;         /* index into departments, -1 unknown */
	bool removed;
	bool touched; /* already changed in this export */
	bool manages; /* someone's manager_id */
} employee_t;

typedef struct roster {
	employee_t *e;
	size_t len, cap;
} roster_t;

static employee_t *roster_add(roster_t *r)
{
	if (r->len == r->cap) {
		r->cap = r->cap ? r->cap * 2 : 256;
		r->e = realloc(r->e, r->cap * sizeof(*r->e));
		if (r->e == NULL)
			die("out of memory");
	}
	employee_t *e = &r->e[r->len++];
	memset(e, 0, sizeof(*e));
	id_attrs_init(&e->extra);
	e->dept = -1;
	return e;
}

static void set(employee_t *e, int col, const char *v)
{
	free(e->v[col]);
	e->v[col] = v != NULL ? xstrdup(v) : NULL;
}

static int dept_index(const char *name)
{
	for (int d = 0; d < NDEPTS; d++)
		if (name != NULL && strcmp(departments[d], name) == 0)
			return d;
	return -1;
}

static int pick_dept(void)
{
	unsigned total = 0, x;
	for (int d = 0; d < NDEPTS; d++)
		total += dept_weight[d];
	x = (unsigned)rng_below(total);
	for (int d = 0; d < NDEPTS; d++) {
		if (x < dept_weight[d])
			return d;
		x -= dept_weight[d];
	}
	return 0;
}

static void pick_title(int dept, char *out, size_t len)
{
	if (rng_chance(5)) {
		snprintf(out, len, "%s", quoted_roles[dept]);
		return;
	}
	const char *level = "";
	unsigned r = (unsigned)rng_below(100);
	if (r < 25)
		level = "Senior ";
	else if (r < 33)
		level = "Junior ";
	else if (r < 38)
		level = "Lead ";
	snprintf(out, len, "%s%s", level, roles[dept][rng_below(6)]);
}

static const char *pick_type(void)
{
	unsigned r = (unsigned)rng_below(100);
	return r < 80   ? "Full-Time"
	       : r < 87 ? "Part-Time"
	       : r < 97 ? "Contractor"
	                : "Intern";
}

/* Civil date of a day count since 1970-01-01 (Howard Hinnant's algorithm). */
static void format_day(long days, char *out, size_t len)
{
	long z = days + 719468, era = (z >= 0 ? z : z - 146096) / 146097;
	long doe = z - era * 146097;
	long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	long y = yoe + era * 400, doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	long mp = (5 * doy + 2) / 153, d = doy - (153 * mp + 2) / 5 + 1;
	long m = mp < 10 ? mp + 3 : mp - 9;
	snprintf(out, len, "%04ld-%02ld-%02ld", y + (m <= 2), m, d);
}

/* 2012-01-02 .. 2026-10-30, and future hires 2026-12-01 .. 2027-02-28. */
#define DAY_PAST_FIRST   15341L
#define DAY_PAST_LAST    20756L
#define DAY_FUTURE_FIRST 20788L
#define DAY_FUTURE_LAST  20877L

static void pick_date(long first, long last, char *out, size_t len)
{
	format_day(first + (long)rng_below((size_t)(last - first + 1)), out, len);
}

/* Who can manage whom: per department, the people with a manager (so not
 * the CEO), and the department's head (the one reporting to the CEO). */
typedef struct dept_lists {
	size_t *idx[NDEPTS];
	size_t n[NDEPTS], cap[NDEPTS];
	const char *head[NDEPTS];
} dept_lists_t;

static void lists_add(dept_lists_t *l, const roster_t *r, size_t i)
{
	const employee_t *e = &r->e[i];
	int d = e->dept;
	if (d < 0 || e->v[C_MGR] == NULL)
		return;
	if (l->head[d] == NULL && strcmp(e->v[C_MGR], r->e[0].v[C_ID]) == 0)
		l->head[d] = e->v[C_ID];
	if (l->n[d] == l->cap[d]) {
		l->cap[d] = l->cap[d] ? l->cap[d] * 2 : 64;
		l->idx[d] = realloc(l->idx[d], l->cap[d] * sizeof(size_t));
		if (l->idx[d] == NULL)
			die("out of memory");
	}
	l->idx[d][l->n[d]++] = i;
}

static void lists_fini(dept_lists_t *l)
{
	for (int d = 0; d < NDEPTS; d++)
		free(l->idx[d]);
}

/* A random manager in dept, the head three times out of ten; never someone
 * who has left. */
static const char *pick_manager(const roster_t *r, const dept_lists_t *l, int dept)
{
	const char *head = l->head[dept];
	if (head != NULL && (l->n[dept] == 0 || rng_chance(30)))
		return head;
	for (int attempt = 0; attempt < 20 && l->n[dept] > 0; attempt++) {
		const employee_t *m = &r->e[l->idx[dept][rng_below(l->n[dept])]];
		if (!m->removed)
			return m->v[C_ID];
	}
	return head != NULL ? head : r->e[0].v[C_ID];
}

static void fill_person(employee_t *e, strset_t *uids)
{
	const char *first = PICK(first_names);
	set(e, C_FIRST, first);
	e->v[C_LAST] = pick_last_name(first, uids);
	for (size_t k = 0; k < sizeof(nicknames) / sizeof(nicknames[0]); k++)
		if (strcmp(nicknames[k][0], first) == 0 && rng_chance(50))
			set(e, C_PREF, nicknames[k][1]);
	set(e, C_LOC, PICK(locations));
	set(e, C_TYPE, pick_type());
}

static void generate(roster_t *r, size_t n, strset_t *uids, dept_lists_t *lists)
{
	char buf[128];
	for (size_t i = 0; i < n; i++) {
		employee_t *e = roster_add(r);
		snprintf(buf, sizeof(buf), "E%zu", 10001 + i);
		set(e, C_ID, buf);
		fill_person(e, uids);
		if (i == 0) {
			e->dept = NDEPTS - 1;
			set(e, C_TITLE, "Chief Executive Officer");
			set(e, C_START, "2012-01-02");
		} else if (i <= NDEPTS) {
			e->dept = (int)i - 1;
			set(e, C_TITLE, dept_heads[e->dept]);
			set(e, C_MGR, r->e[0].v[C_ID]);
			pick_date(DAY_PAST_FIRST, DAY_PAST_FIRST + 900, buf, sizeof(buf));
			set(e, C_START, buf);
		} else {
			e->dept = pick_dept();
			pick_title(e->dept, buf, sizeof(buf));
			set(e, C_TITLE, buf);
			set(e, C_MGR, pick_manager(r, lists, e->dept));
			pick_date(DAY_PAST_FIRST, DAY_PAST_LAST, buf, sizeof(buf));
			set(e, C_START, buf);
		}
		set(e, C_DEPT, departments[e->dept]);
		if (i <= NDEPTS)
			set(e, C_TYPE, "Full-Time");
		lists_add(lists, r, i);
	}
}

/* ---- second export ---------------------------------------------------------- */

static size_t load(roster_t *r, const char *path, strset_t *uids, char ***extra_cols,
                   size_t *nextra)
{
	csv_export_t *x = NULL;
	id_err_t err = {0};
	if (csv_reader_read_file(path, &x, &err) != 0)
		die(err.msg);
	size_t ncols = 0, nrows = 0, maxid = 10000;
	const char *const *cols = csv_export_columns(x, &ncols);
	*extra_cols = xmalloc(sizeof(char *) * ncols);
	*nextra = 0;
	for (size_t c = 0; c < ncols; c++) {
		bool known = false;
		for (int k = 0; k < NCOLS; k++)
			known = known || strcmp(cols[c], columns[k]) == 0;
		if (!known)
			(*extra_cols)[(*nextra)++] = xstrdup(cols[c]);
	}
	const csv_row_t *rows = csv_export_rows(x, &nrows);
	for (size_t i = 0; i < nrows; i++) {
		employee_t *e = roster_add(r);
		set(e, C_ID, rows[i].employee_id);
		for (size_t a = 0; a < rows[i].attrs.len; a++) {
			const id_kv_t *kv = &rows[i].attrs.items[a];
			int col = -1;
			for (int k = 0; k < NCOLS; k++)
				if (strcmp(kv->key, columns[k]) == 0)
					col = k;
			if (col >= 0)
				set(e, col, kv->value);
			else if (id_attrs_set(&e->extra, kv->key, kv->value) != 0)
				die("out of memory");
		}
		e->dept = dept_index(e->v[C_DEPT]);
		char *uid = uid_of(e->v[C_FIRST], e->v[C_LAST]);
		if (!strset_has(uids, uid))
			strset_add(uids, uid);
		free(uid);
		const char *id = rows[i].employee_id;
		if (id[0] == 'E' && (size_t)strtoul(id + 1, NULL, 10) > maxid)
			maxid = (size_t)strtoul(id + 1, NULL, 10);
	}
	if (r->len == 0)
		die("the input export has no employees");
	strset_t managers = {0};
	for (size_t i = 0; i < r->len; i++)
		if (r->e[i].v[C_MGR] != NULL && !strset_has(&managers, r->e[i].v[C_MGR]))
			strset_add(&managers, r->e[i].v[C_MGR]);
	for (size_t i = 0; i < r->len; i++)
		r->e[i].manages = strset_has(&managers, r->e[i].v[C_ID]);
	strset_fini(&managers);
	csv_export_destroy(x);
	return maxid;
}

static size_t *shuffled(size_t n)
{
	size_t *p = xmalloc(sizeof(size_t) * n);
	for (size_t i = 0; i < n; i++)
		p[i] = i;
	for (size_t i = n; i > 1; i--) {
		size_t j = rng_below(i), t = p[i - 1];
		p[i - 1] = p[j];
		p[j] = t;
	}
	return p;
}

static size_t percent_of(size_t n, unsigned pct)
{
	size_t k = (n * pct + 50) / 100;
	return k == 0 && n >= 10 ? 1 : k;
}

static void change(roster_t *r, size_t maxid, strset_t *uids, dept_lists_t *lists)
{
	size_t n = r->len;
	char buf[128];
	size_t *order = shuffled(n);
	for (size_t i = 0; i < n; i++)
		lists_add(lists, r, i);
	size_t want, done, k;

	/* Leavers: people who manage nobody, never the CEO. */
	want = percent_of(n, 3);
	for (k = 0, done = 0; k < n && done < want; k++) {
		employee_t *e = &r->e[order[k]];
		if (order[k] == 0 || e->manages || e->touched)
			continue;
		e->removed = e->touched = true;
		done++;
	}
	/* Movers: a new title, or a new department with its manager. */
	want = percent_of(n, 5);
	for (done = 0; k < n && done < want; k++) {
		employee_t *e = &r->e[order[k]];
		if (order[k] == 0 || e->touched || e->dept < 0 ||
		    (e->v[C_MGR] != NULL && strcmp(e->v[C_MGR], r->e[0].v[C_ID]) == 0))
			continue;
		e->touched = true;
		if (rng_chance(50)) {
			int d = e->dept;
			while (d == e->dept)
				d = pick_dept();
			/* Picked while e is still in its old department, so e
			 * never becomes its own manager. */
			set(e, C_MGR, pick_manager(r, lists, d));
			e->dept = d;
			set(e, C_DEPT, departments[d]);
		}
		pick_title(e->dept, buf, sizeof(buf));
		if (e->v[C_TITLE] != NULL && strcmp(buf, e->v[C_TITLE]) == 0)
			snprintf(buf, sizeof(buf), "Senior %s", roles[e->dept][0]);
		set(e, C_TITLE, buf);
		done++;
	}
	/* Two last-name changes. */
	for (done = 0; k < n && done < 2; k++) {
		employee_t *e = &r->e[order[k]];
		if (e->touched)
			continue;
		e->touched = true;
		char *last = pick_last_name(e->v[C_FIRST], uids);
		free(e->v[C_LAST]);
		e->v[C_LAST] = last;
		done++;
	}
	free(order);
	/* Joiners, starting in the coming months. */
	want = percent_of(n, 5);
	for (done = 0; done < want; done++) {
		employee_t *e = roster_add(r);
		snprintf(buf, sizeof(buf), "E%zu", maxid + 1 + done);
		set(e, C_ID, buf);
		fill_person(e, uids);
		e->dept = pick_dept();
		set(e, C_DEPT, departments[e->dept]);
		pick_title(e->dept, buf, sizeof(buf));
		set(e, C_TITLE, buf);
		set(e, C_MGR, pick_manager(r, lists, e->dept));
		pick_date(DAY_FUTURE_FIRST, DAY_FUTURE_LAST, buf, sizeof(buf));
		set(e, C_START, buf);
	}
}

/* ---- output ------------------------------------------------------------------ */

static void put_field(const char *v)
{
	if (v == NULL)
		return;
	size_t n = strlen(v);
	bool quote =
	    n > 0 && (strpbrk(v, ",\"\r\n") != NULL || v[0] == ' ' || v[n - 1] == ' ');
	if (!quote) {
		fputs(v, stdout);
		return;
	}
	putchar('"');
	for (; *v; v++) {
		if (*v == '"')
			putchar('"');
		putchar(*v);
	}
	putchar('"');
}

static void write_csv(const roster_t *r, char **extra, size_t nextra, bool crlf, bool bom)
{
	const char *eol = crlf ? "\r\n" : "\n";
	if (bom)
		fputs("\xef\xbb\xbf", stdout);
	for (int c = 0; c < NCOLS; c++)
		printf("%s%s", c ? "," : "", columns[c]);
	for (size_t c = 0; c < nextra; c++) {
		putchar(',');
		put_field(extra[c]);
	}
	fputs(eol, stdout);
	for (size_t i = 0; i < r->len; i++) {
		const employee_t *e = &r->e[i];
		if (e->removed)
			continue;
		for (int c = 0; c < NCOLS; c++) {
			if (c)
				putchar(',');
			put_field(e->v[c]);
		}
		for (size_t c = 0; c < nextra; c++) {
			putchar(',');
			put_field(id_attrs_get(&e->extra, extra[c]));
		}
		fputs(eol, stdout);
	}
}

static void usage(void)
{
	fprintf(stderr,
	        "usage: gen_export --employees N --seed S [--crlf] [--bom]\n"
	        "       gen_export --seed S --changes-from FILE.csv [--crlf] [--bom]\n");
	exit(64);
}

int main(int argc, char **argv)
{
	size_t employees = 0;
	uint64_t seed = 1;
	const char *from = NULL;
	bool crlf = false, bom = false;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--employees") == 0 && i + 1 < argc)
			employees = (size_t)strtoull(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
			seed = strtoull(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--changes-from") == 0 && i + 1 < argc)
			from = argv[++i];
		else if (strcmp(argv[i], "--crlf") == 0)
			crlf = true;
		else if (strcmp(argv[i], "--bom") == 0)
			bom = true;
		else
			usage();
	}
	if ((from == NULL) == (employees == 0))
		usage();
	rng_state = seed;

	roster_t r = {0};
	strset_t uids = {0};
	dept_lists_t lists = {0};
	char **extra = NULL;
	size_t nextra = 0;
	if (from == NULL) {
		generate(&r, employees, &uids, &lists);
	} else {
		size_t maxid = load(&r, from, &uids, &extra, &nextra);
		change(&r, maxid, &uids, &lists);
	}
	write_csv(&r, extra, nextra, crlf, bom);
	if (fflush(stdout) != 0 || ferror(stdout))
		die("write error on standard output");

	for (size_t i = 0; i < r.len; i++) {
		for (int c = 0; c < NCOLS; c++)
			free(r.e[i].v[c]);
		id_attrs_fini(&r.e[i].extra);
	}
	free(r.e);
	for (size_t c = 0; c < nextra; c++)
		free(extra[c]);
	free(extra);
	strset_fini(&uids);
	lists_fini(&lists);
	return 0;
}
