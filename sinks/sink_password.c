/*
 * sink_password.c — random initial passwords and their delivery file (see
 * sink_password.h).  Every buffer that held a password is wiped before it
 * is freed or goes out of scope.
 */
#include "sinks/sink_password.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"

static const char alphabet[64] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                 "abcdefghijklmnopqrstuvwxyz"
                                 "0123456789-.";

/* True when needle (n bytes) occurs in hay, ignoring ASCII case. */
static bool contains_ci(const char *hay, const char *needle, size_t n)
{
	for (; *hay; hay++)
		if (strncasecmp(hay, needle, n) == 0)
			return true;
	return false;
}

bool sink_password_meets(const sink_password_policy_t *policy, const char *password,
                         const char *login, const char *display_name)
{
	bool up = false, low = false, dig = false, other = false;
	for (const char *p = password; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (c >= 'A' && c <= 'Z')
			up = true;
		else if (c >= 'a' && c <= 'z')
			low = true;
		else if (c >= '0' && c <= '9')
			dig = true;
		else
			other = true;
	}
	if ((int)up + (int)low + (int)dig + (int)other < policy->min_classes)
		return false;
	if (!policy->avoid_names)
		return true;
	if (login != NULL && strlen(login) > 2 &&
	    contains_ci(password, login, strlen(login)))
		return false;
	for (const char *p = display_name; p != NULL && *p;) {
		size_t n = strcspn(p, ",.-_# \t");
		if (n >= 3 && contains_ci(password, p, n))
			return false;
		p += n;
		if (*p)
			p++;
	}
	return true;
}

int sink_password_generate(const sink_password_policy_t *policy, const char *login,
                           const char *display_name, char *out, id_err_t *err)
{
	size_t len = policy->length;
	unsigned char rnd[SINK_PASSWORD_MAX_LEN];
	int rc = ID_EIO;
	if (len < SINK_PASSWORD_MIN_LEN || len > SINK_PASSWORD_MAX_LEN ||
	    policy->min_classes < 0 || policy->min_classes > 4)
		return id_err_set(err, ID_EINVALID,
		                  "password policy: length %zu (must be %d..%d), %d "
		                  "character classes (must be 0..4)",
		                  len, SINK_PASSWORD_MIN_LEN, SINK_PASSWORD_MAX_LEN,
		                  policy->min_classes);
	/* A miss (a class absent, a name inside) is rare; 64 tries is plenty. */
	for (int t = 0; t < 64 && rc != 0; t++) {
		size_t got = 0;
		while (got < len) {
			ssize_t n = getrandom(rnd + got, len - got, 0);
			if (n < 0 && errno != EINTR) {
				rc = id_err_set(err, ID_EIO, "password: getrandom: %s",
				                strerror(errno));
				goto out;
			}
			got += n > 0 ? (size_t)n : 0;
		}
		for (size_t i = 0; i < len; i++)
			out[i] = alphabet[rnd[i] & 63];
		out[len] = '\0';
		if (sink_password_meets(policy, out, login, display_name))
			rc = 0;
	}
	if (rc != 0)
		rc =
		    id_err_set(err, ID_EIO,
		               "password: no random password met the policy in 64 tries");
out:
	explicit_bzero(rnd, sizeof(rnd));
	if (rc != 0)
		explicit_bzero(out, len + 1);
	return rc;
}

static bool has_control_chars(const char *v)
{
	for (; *v; v++)
		if ((unsigned char)*v < 0x20 || *v == 0x7f)
			return true;
	return false;
}

int sink_password_deliver(const char *file, const char *employee_id, const char *login,
                          const char *password, id_err_t *err)
{
	id_buf_t line = ID_BUF_INIT;
	int fd = -1, rc = 0;
	if (file == NULL)
		return id_err_set(
		    err, ID_EINVALID,
		    "employee %s: no password delivery file is configured, so "
		    "the account is not created (its password would be lost)",
		    employee_id);
	if (has_control_chars(employee_id) || has_control_chars(login))
		return id_err_set(err, ID_EINVALID,
		                  "employee %s: control characters in the employee id or "
		                  "login name cannot go into the delivery file",
		                  employee_id);
	fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		rc = id_err_set(err, ID_EIO, "password delivery file %s: %s", file,
		                strerror(errno));
		goto out;
	}
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
	    (st.st_mode & 077) != 0) {
		rc = id_err_set(
		    err, ID_ECONFIG,
		    "password delivery file %s must be a regular file owned by "
		    "this user with mode 0600 (it is %04o); refusing to write "
		    "passwords into it",
		    file, (unsigned)(st.st_mode & 07777));
		goto out;
	}
	if (id_buf_printf(&line, "%s\t%s\t%s\n", employee_id, login, password) != 0) {
		rc = id_err_set(err, ID_ENOMEM, "password delivery: out of memory");
		goto out;
	}
	for (size_t off = 0; off < line.len;) {
		ssize_t n = write(fd, line.data + off, line.len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = id_err_set(err, ID_EIO,
			                "password delivery file %s: write: %s", file,
			                strerror(errno));
			goto out;
		}
		off += (size_t)n;
	}
	if (fsync(fd) != 0)
		rc = id_err_set(err, ID_EIO, "password delivery file %s: fsync: %s", file,
		                strerror(errno));
out:
	if (line.data != NULL)
		explicit_bzero(line.data, line.cap);
	id_buf_fini(&line);
	if (fd >= 0)
		close(fd);
	return rc;
}
