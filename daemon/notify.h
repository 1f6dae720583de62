/* systemd notification (sd_notify): READY, STATUS, WATCHDOG, STOPPING. Silent when not run by systemd. */
#ifndef NLPD_NOTIFY_H
#define NLPD_NOTIFY_H

#include <stdint.h>

/* Sends one notification (e.g. "READY=1"); a no-op without NOTIFY_SOCKET. */
void nlpd_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The watchdog interval systemd asked for, in microseconds; 0 when there is none. */
uint64_t nlpd_notify_watchdog_usec(void);

#endif
