/*
 * ad_diff.h — the pure half of the Active Directory sink: given a desired
 * identity and the user object that exists for it (or none), compute the
 * ordered operations that make the object match; plus the small pure pieces
 * the executor needs (sAMAccountName and CN derivation, accountExpires
 * conversion, initial password shaping and encoding).  No I/O, no clock, no
 * libldap.
 *
 * Invariants:
 *  - Only the attributes in ad_diff_managed_attrs, the extra attributes
 *    (below), the CN (the RDN), the ACCOUNTDISABLE bit of
 *    userAccountControl, and memberships of groups directly below
 *    layout->groups_dn are ever compared or written.
 *  - Extra attributes: every attribute of the desired identity that is
 *    neither in ad_diff_managed_attrs nor in ad_diff_internal_attrs
 *    (telephoneNumber, company, extensionAttribute1...) is written as it is,
 *    and so is the absence of each name in the extra_attrs given to
 *    ad_diff_compute_extra() (names other identities declare): the attribute is cleared
 * when the policy stops producing a value for it.
 *  - employeeID is always the employee id: it is how the object is found.
 *  - Applying the plan and diffing again yields an empty plan.
 *  - DNs are built here with RFC 4514 escaping; DNs read from the server are
 *    compared with ldap_diff_dn_equal() (AD upper-cases attribute types and
 *    escapes differently from what we send).
 *
 * Thread safety: all functions are reentrant; objects are caller-owned.
 */
#ifndef IDSTREAM_AD_DIFF_H
#define IDSTREAM_AD_DIFF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/attrs.h"
#include "common/buf.h"
#include "common/err.h"
#include "schemas/model.h"

#define AD_DIFF_UAC_ACCOUNTDISABLE 0x0002u
#define AD_DIFF_UAC_NORMAL_ACCOUNT 0x0200u
/* userAccountControl of a new enabled / disabled user. */
#define AD_DIFF_UAC_ENABLED  (AD_DIFF_UAC_NORMAL_ACCOUNT)
#define AD_DIFF_UAC_DISABLED (AD_DIFF_UAC_NORMAL_ACCOUNT | AD_DIFF_UAC_ACCOUNTDISABLE)
/* Pre-Windows 2000 logon names: at most 20 characters. */
#define AD_DIFF_SAM_MAX 20
/* The schema's rangeUpper of cn. */
#define AD_DIFF_CN_MAX 64
/* accountExpires "never" as AD writes it for new accounts (0 means the same). */
#define AD_DIFF_NEVER_EXPIRES "9223372036854775807"
/* Length of generated initial passwords. */
#define AD_DIFF_PASSWORD_LEN 20

/* Managed attribute names, NULL-terminated, in the case used on the wire. */
extern const char *const ad_diff_managed_attrs[];
/*
 * Desired attributes that are never written under their own name,
 * NULL-terminated: the sources of computed values (uid → sAMAccountName
 * and UPN, cn → the RDN, departmentNumber → department, terminationDate →
 * accountExpires) and what the sink or the directory owns (objectClass,
 * userAccountControl, unicodePwd, pwdLastSet, memberOf, member, ...).
 */
extern const char *const ad_diff_internal_attrs[];

/*
 * True when name, an attribute of a desired identity, is an extra
 * attribute: not managed, not internal, and a valid LDAP attribute type
 * name (a letter, then letters, digits and '-').
 */
bool ad_diff_is_extra(const char *name);

typedef struct ad_diff_layout {
	const char *people_dn;  /* e.g. "OU=people,DC=example,DC=test" */
	const char *groups_dn;  /* e.g. "OU=groups,DC=example,DC=test" */
	const char *upn_suffix; /* e.g. "example.test"; NULL/"": no UPN is set */
} ad_diff_layout_t;

/*
 * The user object as it is in the directory.  attrs holds managed
 * attributes only, keyed by the names in ad_diff_managed_attrs, and the
 * extra attributes read (any case); several values are joined by '\n'.  member_of holds
 * every memberOf DN.  uac is userAccountControl (has_uac false when it was not readable).
 * Ownership: the struct owns every string; ad_diff_entry_fini() frees.
 */
typedef struct ad_diff_entry {
	char *dn;
	id_attrs_t attrs;
	char **member_of;
	size_t nmember_of;
	uint32_t uac;
	bool has_uac;
} ad_diff_entry_t;

void ad_diff_entry_init(ad_diff_entry_t *e);
void ad_diff_entry_fini(ad_diff_entry_t *e);
/* Setters copy their argument.  0 or ID_ENOMEM. */
int ad_diff_entry_set_dn(ad_diff_entry_t *e, const char *dn);
int ad_diff_entry_add_member_of(ad_diff_entry_t *e, const char *group_dn);

/* Operation kinds, in plan order; the names are the SinkResult op names. */
#define AD_DIFF_OP_MAP(X)                                                                \
	X(ENSURE_OU, "create_ou")                                                        \
	X(ADD, "add")                                                                    \
	X(DISABLE, "disable")                                                            \
	X(MODRDN, "modrdn")                                                              \
	X(MODIFY, "modify")                                                              \
	X(GROUP_ADD, "group_add")                                                        \
	X(GROUP_REMOVE, "group_remove")                                                  \
	X(ENABLE, "enable")                                                              \
	X(DELETE, "delete")

typedef enum {
#define AD_DIFF_OP_ENUM_(n, s) AD_DIFF_OP_##n,
	AD_DIFF_OP_MAP(AD_DIFF_OP_ENUM_)
#undef AD_DIFF_OP_ENUM_
	    AD_DIFF_OP_COUNT
} ad_diff_op_kind_t;

const char *ad_diff_op_kind_name(ad_diff_op_kind_t k);

/*
 * One operation.  Field use per kind:
 *   ENSURE_OU     dn = the OU; attribute = "ou"; new_value = its ou value
 *   ADD           dn = the new object; alt_dn = the DN to use instead when
 *                 dn is taken by another object (CN "<cn> (<sAMAccountName>)");
 *                 attrs = every attribute to create it with, incl.
 *                 userAccountControl (objectClass and unicodePwd are the
 *                 executor's)
 *   DISABLE       dn; attribute = "userAccountControl"; old/new as decimal
 *   MODRDN        dn = old DN; old_value = old DN; new_value = new DN;
 *                 new_rdn ("CN=..."); new_superior (NULL: parent unchanged);
 *                 alt_rdn/alt_dn: the fallback when new_value is taken
 *                 (NULL when there is none)
 *   MODIFY        dn; attribute; old_value (NULL: absent); new_value (NULL:
 *                 delete the attribute, else replace)
 *   GROUP_ADD     dn = group DN; attribute = group name; new_value = member DN
 *   GROUP_REMOVE  dn = group DN; attribute = group name; old_value = member DN
 *   ENABLE        like DISABLE
 *   DELETE        dn = the object; old_value = its DN
 * Every op after an ADD or MODRDN names the object by the DN of the plan;
 * when the executor had to use the alternative DN it substitutes it.
 */
typedef struct ad_diff_op {
	ad_diff_op_kind_t kind;
	char *dn;
	char *attribute;
	char *old_value;
	char *new_value;
	char *new_rdn;
	char *new_superior;
	char *alt_rdn;
	char *alt_dn;
	id_attrs_t attrs;
} ad_diff_op_t;

typedef struct ad_diff_plan {
	ad_diff_op_t *ops;
	size_t nops;
	size_t cap;
	char *dn;  /* the object's DN once applied (primary form); NULL when none */
	char *sam; /* the sAMAccountName it gets or keeps; NULL when none */
} ad_diff_plan_t;

void ad_diff_plan_init(ad_diff_plan_t *p);
void ad_diff_plan_fini(ad_diff_plan_t *p);

/*
 * Computes the plan turning actual (NULL: no user carries this employeeID)
 * into desired.  plan must be initialised; it is reset first.
 *
 * manager_dn: the DN of desired->manager_id's user as resolved by the
 * caller; when desired->manager_id is set but manager_dn is NULL the
 * attribute is left as it is (a later apply fills it in); when manager_id
 * is NULL the attribute is removed.
 *
 * Lifecycle (disabled = ACCOUNTDISABLE in userAccountControl):
 *   PENDING    no object is created; an existing one is only disabled
 *              (nothing else about it changes before pre-start)
 *   PRESTART   the object exists, disabled (created disabled in the add)
 *   ACTIVE     the object exists, enabled
 *   SUSPENDED  the object exists, disabled; groups follow desired->groups
 *   DISABLED   disabled, accountExpires from the termination: the desired
 *              accountExpires or terminationDate attribute, else the
 *              version's effective_at (an object that already expires
 *              keeps its date); no object is created for it
 *   DELETED    the object is deleted (AD drops its group links itself)
 * In every other state accountExpires follows those attributes, "never"
 * when absent, so a rehire clears the expiry.
 *
 * Errors: ID_EINVALID (no employee id; no sAMAccountName/CN source when an
 * object must exist; an unusable container, layout DN or accountExpires),
 * ID_ENOMEM.
 */
int ad_diff_compute(const ad_diff_layout_t *layout, const desired_identity_t *desired,
                    const ad_diff_entry_t *actual, const char *manager_dn,
                    ad_diff_plan_t *plan, id_err_t *err);

/*
 * As ad_diff_compute(), with extra attribute names managed besides the
 * desired identity's own (extra_attrs, n of them, may be NULL): one the
 * desired identity has no value for is cleared on the object.
 */
int ad_diff_compute_extra(const ad_diff_layout_t *layout, const char *const *extra_attrs,
                          size_t nextra_attrs, const desired_identity_t *desired,
                          const ad_diff_entry_t *actual, const char *manager_dn,
                          ad_diff_plan_t *plan, id_err_t *err);

/*
 * The sAMAccountName desired gives: attribute "sAMAccountName" if set,
 * else "uid"; characters AD forbids ("/\[]:;|=,+*?<>@ and controls) are
 * dropped and the result is cut to AD_DIFF_SAM_MAX characters (never inside
 * a UTF-8 sequence).  Malloc'd (caller frees); NULL when there is no source
 * or nothing is left (or ENOMEM).
 */
char *ad_diff_sam_account_name(const desired_identity_t *desired);

/*
 * The CN desired gives: attribute "cn", else "displayName", else "uid";
 * control characters dropped, cut to AD_DIFF_CN_MAX characters.  Malloc'd;
 * NULL when there is no source.
 */
char *ad_diff_cn(const desired_identity_t *desired);

/*
 * The CN used when cn is taken in the target OU: "<cn> (<sam>)", with cn
 * shortened so the whole stays within AD_DIFF_CN_MAX.  Malloc'd; NULL on
 * ENOMEM.
 */
char *ad_diff_cn_alt(const char *cn, const char *sam);

/*
 * accountExpires from a desired value: "" or "never" → AD_DIFF_NEVER_EXPIRES;
 * a decimal FILETIME (100 ns since 1601-01-01 UTC) is kept as it is (0
 * becomes "never"); "YYYY-MM-DD" (an HR last working day) → the FILETIME of
 * the next day, 00:00 UTC, so the account works through that whole day.
 * out gets a decimal string.  0 or ID_EINVALID.
 */
int ad_diff_account_expires(const char *value, char out[24], id_err_t *err);

/*
 * Shapes AD_DIFF_PASSWORD_LEN random bytes into a password over a 64-symbol
 * alphabet (letters, digits, '-', '.'), so every byte maps without bias.
 * out must hold AD_DIFF_PASSWORD_LEN + 1 bytes.
 */
void ad_diff_password_from_bytes(const unsigned char rnd[AD_DIFF_PASSWORD_LEN],
                                 char *out);

/*
 * AD's default complexity rule: at least 3 of upper case, lower case,
 * digits and other characters; and neither the sAMAccountName (when longer
 * than 2 characters) nor any part of the display name of 3 characters or
 * more (split at , . - _ # tab and space) appears in it, ignoring case.
 * sam and display_name may be NULL.
 */
bool ad_diff_password_complex(const char *password, const char *sam,
                              const char *display_name);

/*
 * The unicodePwd value of password: the password in double quotes,
 * UTF-16LE (surrogate pairs above U+FFFF).  out is reset first.
 * 0, ID_EINVALID (not UTF-8) or ID_ENOMEM.  The caller wipes out.
 */
int ad_diff_unicode_pwd(const char *password, id_buf_t *out);

#endif
