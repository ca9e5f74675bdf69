--[[
examples/policy.lua — the identity policy of Example Corp, written to show
every feature of an idstream policy.  Check it with

    idstream policy check examples/policy.lua --records examples/hr-export-1.csv

THE CONTRACT
============
A policy is a Lua 5.4 file that returns a table (or defines the globals
`targets`, `identity` and, optionally, `sources`):

  targets   list of the target names the policy knows: { "ldap", "ad", "scim" }
  identity  function(emp, ctx) → the identity of one employee (below)
  sources   optional: which HR keys each output depends on, for the "why" of
            every attribute (below)

identity(emp, ctx) is called for every event of an employee.  It must be a
function of emp and ctx only: the same input always gives the same output.

  emp   the employee's merged HR record, read-only.  emp.first_name,
        emp.department ... (lower-case column names).  A field that is
        absent, null, empty or only blanks reads as nil.  emp.employee_id is
        the HR key.  Values are strings; invalid UTF-8 is an error.
        pairs(emp) visits the present fields in key order.
  ctx   ctx.now          the time of the event, ms since 1970 UTC (never the clock)
        ctx.today        the same as "YYYY-MM-DD" (UTC)
        ctx.employee_id  the HR key
        ctx.state        "PENDING" | "ACTIVE" | "SUSPENDED" | "DISABLED" | "DELETED"
        ctx.event        the event type when known ("HIRE", "TERMINATE", ...), else nil
        ctx.reason       the event's reason when known (e.g. "involuntary"), else nil
        ctx.granted      unique values granted so far: ctx.granted.username ...
        Any other field is an error (typos are caught).

It returns:

  {
    targets = {                         -- one entry per declared target
      ldap = {                          -- a table: the employee has an account there
        attributes = { uid = "...", ... },  -- name = string | integer;
                                            -- nil, false and "" mean "no value"
        groups     = { "staff", ... },  -- sorted and de-duplicated for you;
                                        -- false entries are skipped
        container  = "ou=Sales",        -- OU/container below the target's base
      },
      scim = false,                     -- false or nil: out of scope (no account;
                                        -- one that leaves the scope is disabled
                                        -- there, the other targets carry on)
    },
    -- Each target gets its own section: the sink whose target name
    -- (sink.<kind>.target) is "ad" applies targets.ad, in AD's attribute
    -- names; the ldap section is also the identity's top level.
    unique = {                          -- ordered candidate lists of unique values
      username = { "asmith", "asmith2", ... },  -- (claim namespace = { candidates })
    },
    manager_id = "E1001",               -- the manager's employee id, or nil
    timing = {                          -- lifecycle timing; every field optional
      create_days_before_start = 7,     -- create the (disabled) account N days early
      enable   = "start",               -- "start": on the start date | "create"
      disable  = "effective",           -- "effective": at the termination's time |
                                        -- "immediate": as soon as it is known
      delete_after_days = 90,           -- nil/false: never delete
      suspend_on_leave = true,          -- disable during a leave of absence
      name_quarantine_days = 365,       -- a deleted account's names stay reserved
      reuse_name_after_delete = false,  -- may a rehire get the old name back?
      timezone = "Europe/Oslo",         -- the start date is midnight in this zone
    },
  }

Unique values are decided outside the policy: candidates are claimed in
order, and the value granted comes back in ctx.granted.  pick(ctx, ns, list)
gives the granted value while it is still a candidate, else the first
candidate, so attributes can use it before the grant arrives.

Sources: `sources = { uid = { "first_name", "last_name" }, ... }` names the
HR keys behind an output; "ldap.uid" is specific to one target; "@groups",
"@container", "@manager_id" name the non-attribute outputs.  "@employee_id"
and "@lifecycle" (ctx.state) are valid keys.  An output without an entry is
attributed to every HR key the evaluation read.

THE SANDBOX
===========
Available: the Lua language; string (no string.dump), table, math (no
random), utf8; assert, error, ipairs, pairs (sorted keys), select, tonumber,
tostring, type, rawequal, rawlen, rawget, getmetatable, setmetatable (no
__gc/__mode), pcall, xpcall, load (text only), collectgarbage("collect"),
print (shown by `policy check`).  Not available: io, os, require, package,
debug, dofile, loadfile, coroutine, next, rawset.  Globals are read-only once
the file has loaded: inside identity(), use locals.  Every evaluation has an
instruction budget and a memory budget.

HELPERS (nil in → nil out for string helpers)
=======
  lower upper proper trim fold (= normalize_diacritics) alnum slug initial
  mid (= substring) left right join split replace starts_with ends_with
  contains dn_escape sam_account_name candidates with_suffixes pick iif
  coalesce switch lookup in_list get is_empty date_parse date_format
  date_add_days date_diff_days
See processors/README.md, "Policy helpers", for each one.
]]

-- Constants live in the file, so the policy version (the SHA-256 of this
-- file) covers every choice that shapes an identity.
local MAIL_DOMAIN = "example.com"
local AD_UPN_SUFFIX = "corp.example.com"

-- Location → IANA time zone: the start date begins at local midnight.
local TIMEZONES = {
	["Berlin"] = "Europe/Berlin",
	["London"] = "Europe/London",
	["Madrid"] = "Europe/Madrid",
	["München"] = "Europe/Berlin",
	["New York"] = "America/New_York",
	["Oslo"] = "Europe/Oslo",
	["São Paulo"] = "America/Sao_Paulo",
	["Stockholm"] = "Europe/Stockholm",
	["Zürich"] = "Europe/Zurich",
}

-- Termination reasons that disable the account the moment HR records them,
-- rather than at the termination's effective time.  lookup() ignores case.
local DISABLE_IMMEDIATELY = { involuntary = true, ["for cause"] = true, immediate = true }

-- Employment type → the code AD's employeeType carries (switch: exact match).
local TYPE_CODES = { ["Full-Time"] = "FTE", ["Part-Time"] = "PTE", Contractor = "CTR", Intern = "INT" }

-- Titles that make someone a people manager (plain substring match on the
-- lower-cased title padded with spaces, so "vp " does not match "mvp").
local MANAGER_WORDS = { "manager", "head of", " vp ", "chief", "director", " lead " }

local function is_manager(title)
	local t = title and (" " .. lower(title) .. " ")
	if not t then
		return false
	end
	for _, w in ipairs(MANAGER_WORDS) do
		if contains(t, w) then
			return true
		end
	end
	return false
end

-- uid of the default mapping: first letter of first_name + last_name,
-- folded to ASCII, lower-case, [a-z0-9] only.  "Øyvind Åsen" → "oasen".
local function username_base(emp)
	if not emp.first_name then
		error("first_name is absent; the username needs it")
	end
	if not emp.last_name then
		error("last_name is absent; the username needs it")
	end
	local i = initial(emp.first_name)
	    or error("first_name \"" .. emp.first_name .. "\" has no letter or digit that folds to ASCII")
	local l = alnum(emp.last_name)
	    or error("last_name \"" .. emp.last_name .. "\" has no letter or digit that folds to ASCII")
	return i .. l
end

local function identity(emp, ctx)
	local active = ctx.state == "ACTIVE"
	local first, last = emp.first_name, emp.last_name
	local given = coalesce(emp.preferred_name, first)
	local full = join(" ", given, last)
	local dept, location, title = emp.department, emp.location, emp.title
	local contractor = emp.employment_type == "Contractor"
	local manager = is_manager(title)
	local start = date_parse(emp.start_date) -- ms, or nil when absent/invalid

	-- Unique values: ordered candidates; the first free one is granted.
	local base = username_base(emp)
	local usernames = candidates(
		base,                                      -- asmith
		alnum(given) and (initial(given) .. alnum(last)), -- preferred-name initial
		alnum(first) and (alnum(first) .. alnum(last)),   -- annasmith
		with_suffixes(base, 9)                     -- asmith2 .. asmith9
	)
	local username = pick(ctx, "username", usernames)
	local emails = candidates(
		username .. "@" .. MAIL_DOMAIN,
		join(".", alnum(given), alnum(last)) .. "@" .. MAIL_DOMAIN
	)
	local email = pick(ctx, "email", emails)
	-- sAMAccountName: at most 20 characters, suffixes still fit.
	local sams = with_suffixes(sam_account_name(base), 9, 20)
	local sam = pick(ctx, "ad_sam", sams)

	-- LDAP: the same attributes as the built-in default mapping.
	local dept_slug = slug(dept)
	local ldap = {
		attributes = {
			uid = username,
			mail = email,
			givenName = given,
			sn = last,
			cn = full,
			displayName = full,
			title = title,
			departmentNumber = dept,
			employeeNumber = emp.employee_id,
			employeeType = emp.employment_type,
			l = location,
		},
		-- Birthright groups only while active: a disabled account keeps none.
		groups = active and {
			"staff",
			dept_slug and ("dept-" .. dept_slug),
			slug(location) and ("loc-" .. slug(location)),
			manager and "managers",
			contractor and "contractors",
		} or {},
		container = "ou=" .. dn_escape(dept or "Unassigned"),
	}

	-- Active Directory: its own names, OU tree and group naming.  Every
	-- attribute listed here reaches the user object (and is cleared when it
	-- turns nil); one the DC's schema does not define fails the employee
	-- with a FAILED result naming it (extensionAttribute1..15, for example,
	-- exist only where the Exchange schema extension is installed).
	local tenure_years = start and math.floor(date_diff_days(start, ctx.now) / 365) or 0
	local contract_end = date_parse(emp.contract_end_date)
	local ad = {
		attributes = {
			sAMAccountName = sam,
			userPrincipalName = sam .. "@" .. AD_UPN_SUFFIX,
			mail = email,
			givenName = fold(given),
			sn = normalize_diacritics(last),
			displayName = full,
			initials = upper(left(fold(given), 1) .. left(fold(last), 1)),
			title = title and replace(title, "\"", ""),
			department = dept,
			physicalDeliveryOfficeName = location,
			employeeID = emp.employee_id,
			employeeType = switch(emp.employment_type, TYPE_CODES, "OTHER"),
			company = "Example Corp",
			-- Contractors' accounts expire the day after their contract ends
			-- (AD counts 100 ns intervals since 1601-01-01).
			accountExpires = contractor and contract_end
				and (date_add_days(contract_end, 1) + 11644473600000) * 10000,
			info = start and ("Started " .. date_format(start, "%Y-%m-%d")),
		},
		groups = active and {
			"GG-All-Staff",
			dept_slug and ("GG-Dept-" .. proper(dept_slug)),
			manager and "GG-Managers",
			tenure_years >= 5 and "GG-Tenure-5y",
		} or {},
		container = contractor and "OU=Contractors"
			or ("OU=" .. dn_escape(coalesce(dept, "Unassigned")) .. ",OU=Staff"),
	}

	-- SCIM apps: employees only (no contractors, no interns).
	local scim = false
	if not in_list(emp.employment_type, { "Contractor", "Intern" }) then
		scim = {
			attributes = {
				userName = email,
				["name.givenName"] = given,
				["name.familyName"] = last,
				displayName = full,
				nickName = proper(emp.preferred_name),
				title = title,
				['emails[type eq "work"].value'] = email,
				["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber"] = emp.employee_id,
				["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"] = dept,
			},
			groups = active and { "everyone", iif(dept == "Engineering", "engineering", false) } or {},
		}
	end

	-- A termination reason from the event, or an HR column if the export has one.
	local reason = coalesce(ctx.reason, get(emp, "termination_reason"))
	return {
		targets = { ldap = ldap, ad = ad, scim = scim },
		unique = { username = usernames, email = emails, ad_sam = sams },
		manager_id = emp.manager_id,
		timing = {
			create_days_before_start = contractor and 1 or 7,
			enable = "start",
			disable = lookup(reason, DISABLE_IMMEDIATELY, false) and "immediate" or "effective",
			delete_after_days = contractor and 30 or 90,
			suspend_on_leave = true,
			name_quarantine_days = 365,
			reuse_name_after_delete = false,
			timezone = lookup(location, TIMEZONES, "UTC"),
		},
	}
end

-- Which HR keys each output depends on, so `idstream history` can say which
-- event gave an attribute its value.  Outputs not listed are attributed to
-- every HR key the evaluation read.
local NAME = { "first_name", "last_name" }
local FULL = { "preferred_name", "first_name", "last_name" }
return {
	targets = { "ldap", "ad", "scim" },
	identity = identity,
	sources = {
		uid = NAME,
		mail = NAME,
		givenName = { "preferred_name", "first_name" },
		sn = { "last_name" },
		cn = FULL,
		displayName = FULL,
		title = { "title" },
		departmentNumber = { "department" },
		department = { "department" },
		employeeNumber = { "@employee_id" },
		employeeID = { "@employee_id" },
		employeeType = { "employment_type" },
		l = { "location" },
		["ad.sAMAccountName"] = NAME,
		["ad.userPrincipalName"] = NAME,
		["@manager_id"] = { "manager_id" },
		["@container"] = { "department" },
		["ldap.@groups"] = { "@lifecycle", "department", "location", "title", "employment_type" },
	},
}
