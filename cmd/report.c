/*
 * report.c — `idstream report EMPLOYEE_ID --html FILE [--target T]`: one
 * self-contained HTML page about an employee, and report_plan_html(), the
 * page of a plan.
 *
 * The employee page has two parts:
 *   - the current identity (newest desired version): each attribute, state,
 *     container and group with the rule and HR event behind it and the last
 *     operation of target T (default sink.ldap.target) that wrote it;
 *   - the timeline grouped by cause: HR event → the desired versions it
 *     produced (state, policy version, diff against the previous version) →
 *     the sink operations of every target on each version, with outcome.
 *     Versions whose cause is not in hr.events and results whose version is
 *     not in identity.desired are listed after the events, so nothing read
 *     is left out.
 *
 * Invariant: every string taken from a record goes through
 * report_html_escape(); the page has no scripts and loads nothing.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmd/cli.h"
#include "cmd/report.h"
#include "cmd/timeline.h"

static const char report_css[] =
    "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;"
    "background:#f4f5f7;color:#1d2430}"
    "header{background:#1f3a5f;color:#fff;padding:18px 28px}"
    "header h1{margin:0;font-size:22px}header p{margin:4px 0 0;opacity:.85}"
    "main{padding:20px 28px;max-width:1140px}"
    "h2{font-size:17px;margin:26px 0 10px;color:#1f3a5f}"
    "table{border-collapse:collapse;width:100%;background:#fff;margin:6px 0}"
    "th,td{border:1px solid #d5dae1;padding:4px 8px;text-align:left;"
    "vertical-align:top}"
    "th{background:#e8ecf2;font-weight:600}"
    "code{font:12px ui-monospace,Menlo,monospace}"
    ".event{background:#fff;border-left:5px solid #2f6fb3;margin:12px 0;"
    "padding:10px 14px;box-shadow:0 1px 2px rgba(0,0,0,.08)}"
    ".event.orphan{border-left-color:#9a6b00}"
    ".version{margin:8px 0 8px 18px;padding:8px 12px;background:#f7f9fc;"
    "border-left:4px solid #49a078}"
    ".result{margin:6px 0 6px 18px}"
    ".tag{display:inline-block;padding:1px 7px;border-radius:9px;font-size:12px;"
    "font-weight:600;background:#dfe6ee;margin-right:4px}"
    ".ACTIVE,.APPLIED,.add,.create,.enable,.group_add{background:#d3f0dd;"
    "color:#14532d}"
    ".DISABLED,.DELETED,.FAILED,.delete,.disable,.group_remove{background:#f8d7da;"
    "color:#7f1d1d}"
    ".HELD,.DEFERRED,.SUSPENDED,.PENDING,.move,.rename{background:#fdecc8;"
    "color:#713f12}"
    ".muted{color:#6b7280}.old{color:#9b1c1c;text-decoration:line-through}"
    ".new{color:#14532d}.err{color:#9b1c1c}"
    ".counts td:first-child{font-weight:600;width:40%}";

void report_html_escape(FILE *f, const char *s)
{
	for (; s != NULL && *s; s++) {
		switch (*s) {
		case '&':
			fputs("&amp;", f);
			break;
		case '<':
			fputs("&lt;", f);
			break;
		case '>':
			fputs("&gt;", f);
			break;
		case '"':
			fputs("&quot;", f);
			break;
		case '\'':
			fputs("&#39;", f);
			break;
		default:
			fputc(*s, f);
		}
	}
}

/* Short for report_html_escape with a placeholder for absent values. */
static void esc(FILE *f, const char *s)
{
	if (s == NULL)
		fputs("<span class=\"muted\">–</span>", f);
	else
		report_html_escape(f, s);
}

/* A coloured tag; the class is the value itself (record enums and op names,
 * escaped too, since op names come from records). */
static void tag(FILE *f, const char *s)
{
	fputs("<span class=\"tag ", f);
	report_html_escape(f, s);
	fputs("\">", f);
	report_html_escape(f, s);
	fputs("</span>", f);
}

static void page_open(FILE *f, const char *title, const char *subtitle)
{
	fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
	      "<meta name=\"viewport\" content=\"width=device-width\"><title>",
	      f);
	report_html_escape(f, title);
	fprintf(f, "</title><style>%s</style></head>\n<body><header><h1>", report_css);
	report_html_escape(f, title);
	fputs("</h1><p>", f);
	report_html_escape(f, subtitle);
	fputs("</p></header><main>\n", f);
}

static void page_close(FILE *f)
{
	fputs("</main></body></html>\n", f);
}

static void fmt_time(FILE *f, int64_t ms)
{
	char buf[64];
	timeline_fmt_time(ms, buf, sizeof(buf));
	report_html_escape(f, buf);
}

/* ------------------------------------------------------------ employee */

static const attr_cause_t *cause_of(const desired_identity_t *d, const char *aspect)
{
	for (size_t i = 0; i < d->ncauses; i++)
		if (strcmp(d->causes[i].attribute, aspect) == 0)
			return &d->causes[i];
	return NULL;
}

/* Does op write this aspect of the account (same reading as `why`)? */
static bool op_writes(const sink_op_t *op, const char *aspect, const char *group)
{
	const char *a = op->attribute ? op->attribute : "";
	if (strcmp(aspect, "@state") == 0)
		return strcmp(op->op, "disable") == 0 || strcmp(op->op, "enable") == 0 ||
		       strcmp(op->op, "delete") == 0;
	if (strcmp(aspect, "@groups") == 0)
		return (strcmp(op->op, "group_add") == 0 ||
		        strcmp(op->op, "group_remove") == 0) &&
		       group != NULL && strcmp(a, group) == 0;
	if (strcmp(aspect, "@container") == 0)
		return strcmp(op->op, "modrdn") == 0 || strcmp(op->op, "move") == 0 ||
		       ((strcmp(op->op, "add") == 0 || strcmp(op->op, "create") == 0) &&
		        strcmp(a, "dn") == 0);
	if (strcmp(op->op, "group_add") == 0 || strcmp(op->op, "group_remove") == 0 ||
	    strncmp(op->op, "create_", 7) == 0 || strcmp(op->op, "delete_group") == 0)
		return false;
	return strcmp(a, aspect) == 0;
}

/* One row of the current-identity table. */
static void identity_row(FILE *f, const timeline_t *t, const char *target,
                         const desired_identity_t *d, const char *aspect,
                         const char *value, const char *group)
{
	const attr_cause_t *c = cause_of(d, aspect);
	const employee_event_t *ev = c ? timeline_find_event(t, c->event_id) : NULL;
	const sink_op_t *op = NULL;
	int64_t op_ts = 0, op_version = 0;
	for (size_t i = 0; i < t->len; i++) {
		const tl_entry_t *te = &t->items[i];
		if (te->kind != TL_RESULT || te->unreadable || te->r.target == NULL ||
		    strcmp(te->r.target, target) != 0)
			continue;
		for (size_t k = 0; k < te->r.nops; k++)
			if (op_writes(&te->r.ops[k], aspect, group)) {
				op = &te->r.ops[k];
				op_ts = te->ts;
				op_version = te->r.desired_version;
			}
	}
	fputs("<tr><td><code>", f);
	esc(f, aspect);
	fputs("</code></td><td>", f);
	esc(f, value);
	fputs("</td><td>", f);
	if (op != NULL) {
		tag(f, op->op);
		fprintf(f, " v%lld, ", (long long)op_version);
		fmt_time(f, op_ts);
	} else {
		fputs("<span class=\"muted\">not written by this target</span>", f);
	}
	fputs("</td><td><code>", f);
	esc(f, c ? c->rule : NULL);
	fputs("</code></td><td>", f);
	if (ev != NULL) {
		tag(f, employee_event_type_name(ev->type));
		fputs(" effective ", f);
		fmt_time(f, ev->effective_at);
		fputs(" via ", f);
		esc(f, ev->source);
		fputs(" <code>", f);
		esc(f, ev->source_event_id);
		fputs("</code>", f);
	} else if (c != NULL && c->event_id != NULL) {
		fputs("event <code>", f);
		esc(f, c->event_id);
		fputs("</code> (not in hr.events)", f);
	} else {
		fputs("<span class=\"muted\">–</span>", f);
	}
	fputs("</td></tr>\n", f);
}

static void identity_table(FILE *f, const timeline_t *t, const char *target,
                           const desired_identity_t *d)
{
	fputs("<h2>Current identity</h2><p>Desired version ", f);
	fprintf(f, "v%lld ", (long long)d->version);
	tag(f, lifecycle_state_name(d->state));
	fputs(" policy <code>", f);
	esc(f, d->policy_version);
	fputs("</code>; operations shown for target <b>", f);
	esc(f, target);
	fputs("</b>.</p>\n<table><tr><th>Attribute</th><th>Value</th><th>Written "
	      "by</th><th>Rule</th><th>HR event</th></tr>\n",
	      f);
	identity_row(f, t, target, d, "@state", lifecycle_state_name(d->state), NULL);
	identity_row(f, t, target, d, "@container", d->container, NULL);
	if (d->manager_id != NULL)
		identity_row(f, t, target, d, "@manager_id", d->manager_id, NULL);
	for (size_t i = 0; i < d->attributes.len; i++)
		identity_row(f, t, target, d, d->attributes.items[i].key,
		             d->attributes.items[i].value, NULL);
	for (size_t i = 0; i < d->ngroups; i++)
		identity_row(f, t, target, d, "@groups", d->groups[i], d->groups[i]);
	fputs("</table>\n", f);
}

static void diff_row(FILE *f, const char *what, const char *ov, const char *nv)
{
	fputs("<tr><td><code>", f);
	esc(f, what);
	fputs("</code></td><td class=\"old\">", f);
	if (ov != NULL)
		report_html_escape(f, ov);
	fputs("</td><td class=\"new\">", f);
	if (nv != NULL)
		report_html_escape(f, nv);
	fputs("</td></tr>\n", f);
}

static bool same(const char *a, const char *b)
{
	return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static bool has_group(const desired_identity_t *d, const char *g)
{
	for (size_t i = 0; d != NULL && i < d->ngroups; i++)
		if (strcmp(d->groups[i], g) == 0)
			return true;
	return false;
}

/* The differences of d against prev (NULL: the first version). */
static void version_diff(FILE *f, const desired_identity_t *prev,
                         const desired_identity_t *d)
{
	fputs("<table><tr><th>Changed</th><th>Before</th><th>After</th></tr>\n", f);
	size_t rows = 0;
	if (prev == NULL || prev->state != d->state) {
		diff_row(f, "@state", prev ? lifecycle_state_name(prev->state) : NULL,
		         lifecycle_state_name(d->state));
		rows++;
	}
	if (prev == NULL || !same(prev->container, d->container)) {
		diff_row(f, "@container", prev ? prev->container : NULL, d->container);
		rows++;
	}
	if (prev == NULL ? d->manager_id != NULL
	                 : !same(prev->manager_id, d->manager_id)) {
		diff_row(f, "@manager_id", prev ? prev->manager_id : NULL, d->manager_id);
		rows++;
	}
	static const id_attrs_t empty = ID_ATTRS_INIT;
	const id_attrs_t *a = prev ? &prev->attributes : &empty, *b = &d->attributes;
	size_t i = 0, k = 0;
	while (i < a->len || k < b->len) {
		const id_kv_t *x = i < a->len ? &a->items[i] : NULL;
		const id_kv_t *y = k < b->len ? &b->items[k] : NULL;
		int c = x == NULL ? 1 : y == NULL ? -1 : strcmp(x->key, y->key);
		const char *key = c <= 0 ? x->key : y->key;
		const char *ov = c <= 0 ? x->value : NULL, *nv = c >= 0 ? y->value : NULL;
		i += c <= 0;
		k += c >= 0;
		if (!same(ov, nv)) {
			diff_row(f, key, ov, nv);
			rows++;
		}
	}
	for (size_t g = 0; g < d->ngroups; g++)
		if (!has_group(prev, d->groups[g])) {
			diff_row(f, "@groups", NULL, d->groups[g]);
			rows++;
		}
	for (size_t g = 0; prev != NULL && g < prev->ngroups; g++)
		if (!has_group(d, prev->groups[g])) {
			diff_row(f, "@groups", prev->groups[g], NULL);
			rows++;
		}
	if (rows == 0)
		fputs("<tr><td colspan=\"3\" class=\"muted\">no change to the "
		      "identity</td></tr>\n",
		      f);
	fputs("</table>\n", f);
}

static void result_block(FILE *f, const tl_entry_t *te)
{
	const sink_result_t *r = &te->r;
	fputs("<div class=\"result\"><b>", f);
	esc(f, r->target);
	fputs("</b> ", f);
	tag(f, sink_outcome_name(r->outcome));
	fputs(" <span class=\"muted\">at ", f);
	fmt_time(f, te->ts);
	fputs("</span>", f);
	if (r->error != NULL) {
		fputs(" <span class=\"err\">", f);
		report_html_escape(f, r->error);
		fputs("</span>", f);
	}
	if (r->nops > 0) {
		fputs("<table><tr><th>Operation</th><th>On</th><th>Before</th><th>After</"
		      "th></tr>\n",
		      f);
		for (size_t i = 0; i < r->nops; i++) {
			const sink_op_t *o = &r->ops[i];
			fputs("<tr><td>", f);
			tag(f, o->op);
			fputs("</td><td><code>", f);
			esc(f, o->attribute);
			fputs("</code></td><td class=\"old\">", f);
			if (o->old_value)
				report_html_escape(f, o->old_value);
			fputs("</td><td class=\"new\">", f);
			if (o->new_value)
				report_html_escape(f, o->new_value);
			fputs("</td></tr>\n", f);
		}
		fputs("</table>", f);
	}
	fputs("</div>\n", f);
}

/* The newest desired version older than d, or NULL. */
static const desired_identity_t *previous_version(const timeline_t *t,
                                                  const desired_identity_t *d)
{
	const desired_identity_t *p = NULL;
	for (size_t i = 0; i < t->len; i++) {
		const tl_entry_t *te = &t->items[i];
		if (te->kind == TL_DESIRED && !te->unreadable &&
		    te->d.version < d->version &&
		    (p == NULL || te->d.version > p->version))
			p = &te->d;
	}
	return p;
}

static void version_block(FILE *f, const timeline_t *t, const tl_entry_t *de,
                          bool *result_shown)
{
	const desired_identity_t *d = &de->d;
	fprintf(f, "<div class=\"version\"><b>Desired v%lld</b> ", (long long)d->version);
	tag(f, lifecycle_state_name(d->state));
	fputs(" policy <code>", f);
	esc(f, d->policy_version);
	fputs("</code> <span class=\"muted\">effective ", f);
	fmt_time(f, d->effective_at);
	fputs("</span>\n", f);
	version_diff(f, previous_version(t, d), d);
	for (size_t i = 0; i < t->len; i++) {
		const tl_entry_t *te = &t->items[i];
		if (te->kind == TL_RESULT && !te->unreadable &&
		    te->r.desired_version == d->version) {
			result_block(f, te);
			result_shown[i] = true;
		}
	}
	fputs("</div>\n", f);
}

static void event_head(FILE *f, const employee_event_t *ev, int64_t ts)
{
	fputs("<div class=\"event\"><b>HR event</b> ", f);
	tag(f, employee_event_type_name(ev->type));
	fputs(" effective ", f);
	fmt_time(f, ev->effective_at);
	fputs(" via <b>", f);
	esc(f, ev->source);
	fputs("</b> <code>", f);
	esc(f, ev->source_event_id);
	fputs("</code> actor ", f);
	esc(f, ev->actor);
	if (ev->reason != NULL) {
		fputs(", reason ", f);
		report_html_escape(f, ev->reason);
	}
	fputs(" <span class=\"muted\">recorded ", f);
	fmt_time(f, ts);
	fputs("</span>\n", f);
	if (ev->attributes.len > 0) {
		fputs("<table><tr><th>HR attribute</th><th>Value</th></tr>\n", f);
		for (size_t i = 0; i < ev->attributes.len; i++) {
			/* A policy activation: its name and version, not its
			 * source (`history --verbose` shows that). */
			if (timeline_attr_is_detail(ev, ev->attributes.items[i].key))
				continue;
			fputs("<tr><td><code>", f);
			esc(f, ev->attributes.items[i].key);
			fputs("</code></td><td>", f);
			if (ev->attributes.items[i].value)
				report_html_escape(f, ev->attributes.items[i].value);
			else
				fputs("<span class=\"muted\">(cleared)</span>", f);
			fputs("</td></tr>\n", f);
		}
		fputs("</table>\n", f);
	}
}

static void timeline_html(FILE *f, const timeline_t *t, bool *shown)
{
	fputs("<h2>Timeline: HR event → desired versions → operations</h2>\n", f);
	for (size_t i = 0; i < t->len; i++) {
		const tl_entry_t *te = &t->items[i];
		if (te->kind != TL_EVENT || te->unreadable)
			continue;
		event_head(f, &te->ev, te->ts);
		shown[i] = true;
		for (size_t k = 0; k < t->len; k++) {
			const tl_entry_t *de = &t->items[k];
			if (de->kind == TL_DESIRED && !de->unreadable &&
			    same(de->d.cause_event_id, te->ev.event_id)) {
				version_block(f, t, de, shown);
				shown[k] = true;
			}
		}
		fputs("</div>\n", f);
	}
	bool open = false;
	for (size_t i = 0; i < t->len; i++) {
		if (shown[i] || t->items[i].kind != TL_DESIRED || t->items[i].unreadable)
			continue;
		if (!open)
			fputs(
			    "<div class=\"event orphan\"><b>Versions whose cause is not "
			    "in hr.events</b> (timers, policy activations)\n",
			    f);
		open = true;
		version_block(f, t, &t->items[i], shown);
		shown[i] = true;
	}
	if (open)
		fputs("</div>\n", f);
	open = false;
	for (size_t i = 0; i < t->len; i++) {
		if (shown[i])
			continue;
		if (!open)
			fputs("<div class=\"event orphan\"><b>Other records</b> "
			      "(results of versions not in identity.desired, unreadable "
			      "records)\n",
			      f);
		open = true;
		if (t->items[i].unreadable) {
			fputs("<p class=\"err\">", f);
			esc(f, t->items[i].error);
			fputs("</p>\n", f);
		} else if (t->items[i].kind == TL_RESULT) {
			fprintf(f, "<p>result for v%lld:</p>",
			        (long long)t->items[i].r.desired_version);
			result_block(f, &t->items[i]);
		}
	}
	if (open)
		fputs("</div>\n", f);
}

/* Writes the employee page; 0 or -1 on a write error. */
static int report_employee_html(FILE *f, const timeline_t *t, const char *employee,
                                const char *target)
{
	const desired_identity_t *cur = NULL;
	size_t nev = 0, nver = 0, nres = 0;
	for (size_t i = 0; i < t->len; i++) {
		const tl_entry_t *te = &t->items[i];
		if (te->unreadable)
			continue;
		nev += te->kind == TL_EVENT;
		nres += te->kind == TL_RESULT;
		if (te->kind == TL_DESIRED) {
			nver++;
			if (cur == NULL || te->d.version > cur->version)
				cur = &te->d;
		}
	}
	char title[256], sub[256], now[64];
	const char *cn = cur ? id_attrs_get(&cur->attributes, "cn") : NULL;
	snprintf(title, sizeof(title), "Employee %s%s%s", employee, cn ? " — " : "",
	         cn ? cn : "");
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	timeline_fmt_time((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, now,
	                  sizeof(now));
	snprintf(sub, sizeof(sub),
	         "%zu HR events, %zu desired versions, %zu sink results; generated %s",
	         nev, nver, nres, now);
	page_open(f, title, sub);
	if (cur != NULL)
		identity_table(f, t, target, cur);
	else
		fputs("<p class=\"muted\">No desired identity yet.</p>\n", f);
	bool *shown = calloc(t->len ? t->len : 1, sizeof(*shown));
	if (shown == NULL)
		return -1;
	timeline_html(f, t, shown);
	free(shown);
	page_close(f);
	return ferror(f) ? -1 : 0;
}

/* ---------------------------------------------------------------- plan */

static const char *jstr(const json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

static void count_map(FILE *f, const json_t *sum, const char *key, const char *title)
{
	json_t *m = json_object_get(sum, key);
	if (json_object_size(m) == 0)
		return;
	fputs("<h2>", f);
	report_html_escape(f, title);
	fputs("</h2><table class=\"counts\">\n", f);
	const char *k;
	json_t *v;
	json_object_foreach(m, k, v)
	{
		fputs("<tr><td><code>", f);
		report_html_escape(f, k);
		fprintf(f, "</code></td><td>%lld</td></tr>\n",
		        (long long)json_integer_value(v));
	}
	fputs("</table>\n", f);
}

int report_plan_html(FILE *f, const json_t *plan)
{
	static const char *const kinds[] = {"creates", "attribute_updates", "renames",
	                                    "moves",   "disables",          "enables",
	                                    "deletes", "unchanged"};
	json_t *sum = json_object_get(plan, "summary");
	json_t *diffs = json_object_get(plan, "employees_changed");
	char title[256], sub[256];
	snprintf(title, sizeof(title), "Plan for policy %s",
	         jstr(plan, "policy_version") ? jstr(plan, "policy_version") : "?");
	snprintf(sub, sizeof(sub),
	         "replayed %lld events of %lld employees against %lld current versions; "
	         "%zu employees change",
	         (long long)json_integer_value(json_object_get(plan, "events_replayed")),
	         (long long)json_integer_value(json_object_get(plan, "employees")),
	         (long long)json_integer_value(json_object_get(plan, "current_versions")),
	         json_array_size(diffs));
	page_open(f, title, sub);
	if (json_is_integer(json_object_get(plan, "at"))) {
		fputs("<p>Evaluated at ", f);
		fmt_time(f, json_integer_value(json_object_get(plan, "at")));
		fputs("</p>\n", f);
	}
	/* One summary per target (plans before per-target summaries: one). */
	json_t *targets = json_object_get(plan, "targets");
	const char *tname = jstr(plan, "target");
	void *it = json_is_object(targets) ? json_object_iter(targets) : NULL;
	for (int first = 1; first || it != NULL; first = 0) {
		if (it != NULL) {
			tname = json_object_iter_key(it);
			sum = json_object_iter_value(it);
			it = json_object_iter_next(targets, it);
		}
		fputs("<h2>Summary", f);
		if (tname != NULL) {
			fputs(" for target ", f);
			esc(f, tname);
		}
		fputs("</h2><table class=\"counts\">\n", f);
		for (size_t i = 0; i < sizeof(kinds) / sizeof(*kinds); i++)
			fprintf(f, "<tr><td>%s</td><td>%lld</td></tr>\n", kinds[i],
			        (long long)json_integer_value(
			            json_object_get(sum, kinds[i])));
		fputs("</table>\n", f);
		count_map(f, sum, "attributes", "Attribute updates per attribute");
		count_map(f, sum, "group_adds", "Users joining each group");
		count_map(f, sum, "group_removes", "Users leaving each group");
	}
	fputs("<h2>Changes per employee</h2>\n", f);
	if (json_array_size(diffs) == 0)
		fputs("<p class=\"muted\">No changes.</p>\n", f);
	else
		fputs("<table><tr><th>Employee</th><th>Target</th><th>Change</th><th>On</"
		      "th><th>Before</th><th>After</th></tr>\n",
		      f);
	for (size_t i = 0; i < json_array_size(diffs); i++) {
		json_t *d = json_array_get(diffs, i);
		json_t *ch = json_object_get(d, "changes");
		for (size_t k = 0; k < json_array_size(ch); k++) {
			json_t *c = json_array_get(ch, k);
			const char *kind = jstr(c, "kind");
			const char *on = jstr(c, "attribute") ? jstr(c, "attribute")
			                                      : jstr(c, "group");
			fputs("<tr><td>", f);
			if (k == 0)
				esc(f, jstr(d, "employee_id"));
			fputs("</td><td>", f);
			if (jstr(c, "target") != NULL)
				esc(f, jstr(c, "target"));
			fputs("</td><td>", f);
			tag(f, kind ? kind : "?");
			fputs("</td><td><code>", f);
			if (on != NULL)
				report_html_escape(f, on);
			else if (jstr(c, "state") != NULL)
				report_html_escape(f, jstr(c, "state"));
			fputs("</code></td><td class=\"old\">", f);
			if (jstr(c, "old"))
				report_html_escape(f, jstr(c, "old"));
			fputs("</td><td class=\"new\">", f);
			if (jstr(c, "new"))
				report_html_escape(f, jstr(c, "new"));
			fputs("</td></tr>\n", f);
		}
	}
	if (json_array_size(diffs) > 0)
		fputs("</table>\n", f);
	page_close(f);
	return ferror(f) ? -1 : 0;
}

int report_plan_html_file(const char *path, const json_t *plan, id_err_t *err)
{
	FILE *f = fopen(path, "w");
	if (f == NULL)
		return id_err_set(err, ID_EIO, "cannot write %s", path);
	int wrc = report_plan_html(f, plan);
	if (fclose(f) != 0 || wrc != 0)
		return id_err_set(err, ID_EIO, "writing %s failed", path);
	return 0;
}

/* ------------------------------------------------------------- command */

static void report_usage(void)
{
	printf("usage: idstream report EMPLOYEE_ID --html FILE [--target T]\n"
	       "\n"
	       "Writes a self-contained HTML page (no scripts, no external resources) "
	       "about the\n"
	       "employee: the current identity with the rule, HR event and operation "
	       "behind each\n"
	       "attribute, and the timeline HR event → desired versions → sink "
	       "operations.\n"
	       "\n"
	       "  --html FILE   the page to write (\"-\": standard output)\n"
	       "  --target T    the target whose operations explain the current "
	       "identity\n"
	       "                (default: sink.ldap.target)\n");
}

int cmd_report(cli_t *cli, int argc, char **argv)
{
	const char *employee = NULL, *path = NULL, *target = NULL;
	for (int i = 1; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			report_usage();
			return CLI_EXIT_OK;
		} else if (strcmp(argv[i], "--html") == 0 && i + 1 < argc) {
			path = argv[++i];
		} else if (strcmp(argv[i], "--target") == 0 && i + 1 < argc) {
			target = argv[++i];
		} else if (argv[i][0] != '-' && employee == NULL) {
			employee = argv[i];
		} else {
			return cli_usage_error("report", "unknown argument \"%s\"",
			                       argv[i]);
		}
	}
	if (employee == NULL)
		return cli_usage_error("report", "missing EMPLOYEE_ID");
	if (path == NULL)
		return cli_usage_error("report", "missing --html FILE");
	if (target == NULL)
		target = id_config_str(cli->cfg, "sink.ldap.target");

	id_err_t err = {0};
	timeline_t t;
	FILE *f = NULL;
	int rc = CLI_EXIT_OK;
	if (timeline_load(cli->cfg, employee, &t, &err) != 0) {
		rc = cli_fail("report", &err);
		goto out;
	}
	if (t.len == 0) {
		fprintf(stderr, "idstream: report: no history for employee %s\n",
		        employee);
		rc = CLI_EXIT_FAIL;
		goto out;
	}
	f = strcmp(path, "-") == 0 ? stdout : fopen(path, "w");
	if (f == NULL) {
		id_err_set(&err, ID_EIO, "cannot write %s", path);
		rc = cli_fail("report", &err);
		goto out;
	}
	int wrc = report_employee_html(f, &t, employee, target);
	int crc = f != stdout ? fclose(f) : fflush(f);
	f = NULL;
	if (wrc != 0 || crc != 0) {
		id_err_set(&err, ID_EIO, "writing %s failed", path);
		rc = cli_fail("report", &err);
		goto out;
	}
out:
	if (f != NULL && f != stdout)
		fclose(f);
	timeline_fini(&t);
	return rc;
}
