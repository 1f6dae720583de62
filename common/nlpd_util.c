/* The capped file reader and the model-folder JSON loader (see nlpd_util.h). */
#include "nlpd_util.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int nlpd_util_read_file(const char *path, size_t max, char **out, size_t *len, struct nlpd_error *err)
{
    *out = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return nlpd_error_set(err, errno == ENOENT ? NLPD_ENOTFOUND : NLPD_EIO, 0, "%s: cannot open: %s", path,
                              strerror(errno));
    /* limit: the bytes the buffer may hold, one past max (to see that a file is too large) plus the NUL */
    size_t limit = max > SIZE_MAX - 2 ? SIZE_MAX : max + 2;
    size_t cap = 65536;
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
        if ((uint64_t)st.st_size > max) {
            fclose(f);
            return nlpd_error_set(err, NLPD_ERANGE, 0, "%s: larger than %zu bytes", path, max);
        }
        cap = (size_t)st.st_size + 2; /* + 1 to see EOF in one read, + 1 for the NUL */
    }
    if (cap > limit)
        cap = limit;
    char *buf = malloc(cap);
    size_t n = 0;
    int rc = buf ? 0 : NLPD_ENOMEM;
    while (!rc) {
        if (n + 1 == cap) {
            size_t nc = cap > limit / 2 ? limit : cap * 2;
            char *nb = nc > cap ? realloc(buf, nc) : NULL;
            if (!nb) {
                rc = NLPD_ENOMEM;
                break;
            }
            buf = nb;
            cap = nc;
        }
        size_t r = fread(buf + n, 1, cap - 1 - n, f);
        n += r;
        if (n > max)
            rc = NLPD_ERANGE;
        else if (r == 0)
            break;
    }
    int ioerr = !rc && ferror(f) ? errno : 0;
    fclose(f);
    if (!rc && ioerr)
        rc = NLPD_EIO;
    if (rc) {
        free(buf);
        if (rc == NLPD_ERANGE)
            return nlpd_error_set(err, rc, 0, "%s: larger than %zu bytes", path, max);
        if (rc == NLPD_ENOMEM)
            return nlpd_error_set(err, rc, 0, "%s: out of memory reading the file", path);
        return nlpd_error_set(err, rc, 0, "%s: read error: %s", path, strerror(ioerr));
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

int nlpd_util_load_json(const char *dir, const char *name, unsigned flags, json_t **out, struct nlpd_error *err)
{
    *out = NULL;
    size_t dl = strlen(dir), nl = strlen(name);
    char *path = malloc(dl + nl + 2);
    if (!path)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", name);
    memcpy(path, dir, dl);
    path[dl] = '/';
    memcpy(path + dl + 1, name, nl + 1);
    char *s;
    size_t len;
    struct nlpd_error e = {0};
    int rc = nlpd_util_read_file(path, NLPD_UTIL_JSON_MAX, &s, &len, &e);
    if (rc == NLPD_ENOTFOUND && (flags & NLPD_UTIL_JSON_OPTIONAL)) {
        free(path);
        return 0;
    }
    if (rc) {
        free(path);
        if (err)
            *err = e;
        return rc;
    }
    json_error_t je;
    json_t *j = json_loadb(s, len, 0, &je);
    free(s);
    if (!j)
        rc = nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: invalid JSON (line %d: %s)", path, je.line, je.text);
    else if (!json_is_object(j)) {
        rc = nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: not a JSON object", path);
        json_decref(j);
        j = NULL;
    }
    free(path);
    *out = j;
    return rc;
}
