-- Policy of the lifecycle scenarios (tests/cases/lifecycle/*.case):
-- accounts are created 7 days before the start date (3 for contractors),
-- disabled at the termination's time (at once for "involuntary"), deleted
-- 30 days later, suspended during a leave; the start date is midnight in
-- the location's zone.
local ZONES = { Oslo = "Europe/Oslo", ["New York"] = "America/New_York" }

local function identity(emp, ctx)
	local active = ctx.state == "ACTIVE"
	local uid = initial(emp.first_name) .. alnum(emp.last_name)
	local contractor = emp.employment_type == "Contractor"
	return {
		targets = {
			ldap = {
				attributes = {
					uid = uid,
					cn = join(" ", emp.first_name, emp.last_name),
					sn = emp.last_name,
					title = emp.title,
					employeeType = emp.employment_type,
				},
				groups = active and {
					"staff",
					contractor and "contractors" or "employees",
					emp.department and ("dept-" .. slug(emp.department)) or false,
				} or {},
				container = "ou=" .. coalesce(emp.department, "Unassigned"),
			},
		},
		manager_id = emp.manager_id,
		timing = {
			create_days_before_start = contractor and 3 or 7,
			enable = "start",
			disable = lookup(ctx.reason, { involuntary = true }, false) and "immediate"
			    or "effective",
			delete_after_days = 30,
			suspend_on_leave = true,
			timezone = lookup(emp.location, ZONES, "UTC"),
		},
	}
end

return { targets = { "ldap" }, identity = identity }
