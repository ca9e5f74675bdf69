/*
 * sink_password.h — initial passwords of new accounts, shared by the sinks
 * that set one (AD, OpenLDAP, SCIM): random, meeting a policy, handed over
 * through a delivery file and nowhere else.
 *
 * Invariants:
 *  - A password is never logged, never put in a SinkResult, and wiped from
 *    memory by whoever holds it once it is sent.
 *  - The delivery line is on disk (fsync'd) before the account that uses the
 *    password is created, so a crash can leave a line for an account that
 *    was never made (the next creation appends a newer one), never an
 *    account whose password nobody has.
 *
 * Thread safety: all functions are reentrant.
 */
#ifndef IDSTREAM_SINK_PASSWORD_H
#define IDSTREAM_SINK_PASSWORD_H

#include <stdbool.h>
#include <stddef.h>

#include "common/err.h"

#define SINK_PASSWORD_MIN_LEN 8
#define SINK_PASSWORD_MAX_LEN 128

/*
 * What a generated password must satisfy.  Symbols are drawn from 64
 * (A-Z a-z 0-9 '-' '.'), so every random byte maps without bias.
 *   length       SINK_PASSWORD_MIN_LEN..SINK_PASSWORD_MAX_LEN
 *   min_classes  how many of upper case, lower case, digits and other
 *                characters must appear (0..4)
 *   avoid_names  the login name (when longer than 2 characters) and each
 *                part of the display name of 3 characters or more (split at
 *                , . - _ # tab and space) must not appear, ignoring case —
 *                Active Directory's rule, and a sound one anywhere
 */
typedef struct sink_password_policy {
	size_t length;
	int min_classes;
	bool avoid_names;
} sink_password_policy_t;

/* True when password satisfies policy for that login and display name
 * (either may be NULL). */
bool sink_password_meets(const sink_password_policy_t *policy, const char *password,
                         const char *login, const char *display_name);

/*
 * A random password (getrandom) meeting policy, into out, which must hold
 * policy->length + 1 bytes.  0; ID_EINVALID (length out of range, or
 * min_classes outside 0..4); ID_EIO (no randomness, or 64 draws all missed
 * the policy).  out is wiped on failure.
 */
int sink_password_generate(const sink_password_policy_t *policy, const char *login,
                           const char *display_name, char *out, id_err_t *err);

/*
 * Appends "employee_id TAB login TAB password LF" to file and flushes it to
 * disk.  The file is created 0600; an existing one that is not a regular
 * file owned by this user, or that group/others may read, is refused
 * (ID_ECONFIG).  file NULL: ID_EINVALID (the account must not be created:
 * its password would be lost).  Control characters in employee_id or login
 * are refused (ID_EINVALID): they would break the line format.
 * ID_EIO for I/O errors.
 */
int sink_password_deliver(const char *file, const char *employee_id, const char *login,
                          const char *password, id_err_t *err);

#endif
