/*
 * failpoint.h — named crash points for recovery tests.
 *
 * IDSTREAM_FAILPOINTS="name[,name...]" in the environment makes
 * id_failpoint_crash(name) kill the process with SIGKILL at that point, as a
 * power cut or `kill -9` would.  Without the variable this is one getenv()
 * per call on paths that run once per transaction, never per event.
 *
 * Points: processor.after_commit (Kafka transaction committed, RocksDB
 * WriteBatch not yet written), sink.after_apply (LDAP written, applied
 * version not yet recorded).
 */
#ifndef IDSTREAM_FAILPOINT_H
#define IDSTREAM_FAILPOINT_H

void id_failpoint_crash(const char *name);

#endif
