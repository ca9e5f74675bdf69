-- split-sales.lua — the built-in mapping, written as a policy, with one
-- change: the Sales department's birthright group is split in two by
-- region (dept-sales-emea, dept-sales-americas).  Used by test_plan.sh.

local AMERICAS = { ["New York"] = true, ["São Paulo"] = true }

local function identity(emp, ctx)
	local uid = initial(emp.first_name) .. alnum(emp.last_name)
	local given = coalesce(emp.preferred_name, emp.first_name)
	local attrs = {
		uid = uid,
		cn = given .. " " .. emp.last_name,
		displayName = given .. " " .. emp.last_name,
		sn = emp.last_name,
		givenName = given,
		mail = uid .. "@example.com",
		title = emp.title,
		departmentNumber = emp.department,
		employeeNumber = ctx.employee_id,
		employeeType = emp.employment_type,
		l = emp.location,
	}
	local groups = {}
	if ctx.state == "ACTIVE" then
		groups = { "staff" }
		if emp.department == "Sales" then
			groups[2] = AMERICAS[emp.location] and "dept-sales-americas" or "dept-sales-emea"
		elseif emp.department then
			groups[2] = "dept-" .. slug(emp.department)
		end
	end
	return {
		targets = {
			ldap = {
				attributes = attrs,
				groups = groups,
				container = "ou=" .. dn_escape(coalesce(emp.department, "Unassigned")),
			},
		},
		manager_id = emp.manager_id,
		-- The timing tests/lib.sh gives the built-in mapping (every hire
		-- provisioned at once), so the plan shows only the group split.
		timing = { create_days_before_start = 3650, enable = "create" },
	}
end

return { targets = { "ldap" }, identity = identity }
