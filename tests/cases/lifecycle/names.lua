-- Policy of the unique-name scenarios (tests/cases/lifecycle/names_*.case):
-- usernames are claimed from first initial + last name, then the same with
-- 2 and 3 appended; the e-mail is built from the username granted (or the
-- first candidate until then), then first.last.  Deleted 30 days after the
-- termination; names stay reserved for 365 days; a rehire gets the old
-- names back only when the HR record says reuse=yes.
local DOMAIN = "example.com"

local function identity(emp, ctx)
	local base = initial(emp.first_name) .. alnum(emp.last_name)
	local usernames = candidates(base, with_suffixes(base, 3))
	local username = pick(ctx, "username", usernames)
	local emails = candidates(
		username .. "@" .. DOMAIN,
		join(".", alnum(emp.first_name), alnum(emp.last_name)) .. "@" .. DOMAIN
	)
	local mail = pick(ctx, "email", emails)
	return {
		targets = {
			ldap = {
				attributes = {
					uid = username,
					mail = mail,
					cn = join(" ", emp.first_name, emp.last_name),
					sn = emp.last_name,
				},
				groups = ctx.state == "ACTIVE" and { "staff" } or {},
				container = "ou=People",
			},
		},
		unique = { username = usernames, email = emails },
		timing = {
			delete_after_days = 30,
			name_quarantine_days = 365,
			reuse_name_after_delete = emp.reuse == "yes",
		},
	}
end

return { targets = { "ldap" }, identity = identity }
