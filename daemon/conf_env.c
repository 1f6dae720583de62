/* Environment references in configuration strings and secrets read from files (see conf_env.h): applied to the
 * parsed libconfig tree before any section is validated, so every string value of every section and stage gets
 * them the same way, and their errors carry the value's FILE:LINE. */
#include "conf_env.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf_map.h"
#include "nlpd_error.h"

struct text {
    char *p;
    size_t n, cap;
};

static int put(struct text *t, const char *s, size_t len)
{
    if (t->n + len + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 64;
        while (t->n + len + 1 > cap)
            cap *= 2;
        char *g = realloc(t->p, cap);
        if (!g)
            return NLPD_ENOMEM;
        t->p = g;
        t->cap = cap;
    }
    memcpy(t->p + t->n, s, len);
    t->n += len;
    t->p[t->n] = '\0';
    return 0;
}

/* Expands one value into a malloc'ed string; NULL with why filled on an error. */
static char *expand(const char *v, char *why, size_t why_cap)
{
    struct text out = {0};
    int rc = put(&out, "", 0);
    for (const char *p = v; *p && rc == 0;) {
        if (p[0] == '$' && p[1] == '$' && p[2] == '{') { /* $${ is a literal ${ */
            rc = put(&out, "${", 2);
            p += 3;
            continue;
        }
        if (p[0] != '$' || p[1] != '{') {
            rc = put(&out, p, 1);
            p++;
            continue;
        }
        const char *name = p + 2, *e = name;
        while (*e == '_' || isalnum((unsigned char)*e))
            e++;
        if (e == name || isdigit((unsigned char)*name) || (*e != '}' && strncmp(e, ":-", 2) != 0)) {
            snprintf(why, why_cap,
                     "\"%.60s\": \"${\" must be followed by a variable name and \"}\" or \":-default}\" "
                     "(write \"$${\" for a literal \"${\")",
                     p);
            free(out.p);
            return NULL;
        }
        const char *def = NULL, *end = e;
        if (*e == ':') {
            def = e + 2;
            end = strchr(def, '}');
            if (!end) {
                snprintf(why, why_cap, "\"%.60s\": no closing \"}\"", p);
                free(out.p);
                return NULL;
            }
        }
        char var[256];
        if ((size_t)(e - name) >= sizeof var) {
            snprintf(why, why_cap, "variable name \"%.40s...\" too long", name);
            free(out.p);
            return NULL;
        }
        memcpy(var, name, (size_t)(e - name));
        var[e - name] = '\0';
        const char *val = getenv(var);
        if (def && (!val || !*val)) /* as the shell's ${VAR:-default}: unset or empty */
            rc = put(&out, def, (size_t)(end - def));
        else if (val)
            rc = put(&out, val, strlen(val));
        else {
            snprintf(why, why_cap, "environment variable %.100s is not set (give a default: ${%.100s:-value})", var,
                     var);
            free(out.p);
            return NULL;
        }
        p = end + 1;
    }
    if (rc) {
        snprintf(why, why_cap, "out of memory");
        free(out.p);
        return NULL;
    }
    return out.p;
}

static int walk(config_setting_t *s, const char *file, struct nlpd_diag *diag)
{
    int t = config_setting_type(s), errors = 0;
    if (t == CONFIG_TYPE_GROUP || t == CONFIG_TYPE_LIST || t == CONFIG_TYPE_ARRAY) {
        int n = config_setting_length(s);
        for (int i = 0; i < n; i++)
            errors += walk(config_setting_get_elem(s, (unsigned)i), file, diag);
        return errors;
    }
    if (t != CONFIG_TYPE_STRING)
        return 0;
    const char *v = config_setting_get_string(s);
    if (!strchr(v, '$'))
        return 0;
    char why[512];
    char *x = expand(v, why, sizeof why);
    if (!x) {
        const char *name = config_setting_name(s);
        nlpd_diag_add(diag, nlpd_conf_file(s, file), config_setting_source_line(s), "%s%s%s", name ? name : "",
                      name ? ": " : "", why);
        return 1;
    }
    if (strcmp(x, v) != 0)
        config_setting_set_string(s, x);
    free(x);
    return 0;
}

int nlpd_conf_expand_env(config_setting_t *root, const char *file, struct nlpd_diag *diag)
{
    return root ? walk(root, file, diag) : 0;
}

int nlpd_conf_read_secret(const char *key, const char *path, char **out, char *why, size_t why_cap)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        int en = errno;
        if (fd >= 0)
            close(fd);
        snprintf(why, why_cap, "%s '%s': %s", key, path, strerror(en));
        return NLPD_EINVAL;
    }
    if (st.st_mode & (S_IROTH | S_IWOTH)) {
        close(fd);
        snprintf(why, why_cap, "%s '%s' is readable or writable by others (chmod o-rw %s)", key, path, path);
        return NLPD_EINVAL;
    }
    char buf[4097];
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    if (n < 0 || n == (ssize_t)sizeof buf) {
        snprintf(why, why_cap, "%s '%s': %s", key, path, n < 0 ? "cannot read it" : "longer than 4096 bytes");
        return NLPD_EINVAL;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--; /* the line end an editor or echo adds is not part of the secret */
    if (n == 0 || memchr(buf, '\0', (size_t)n)) {
        snprintf(why, why_cap, "%s '%s' is %s", key, path, n ? "binary (holds a NUL byte)" : "empty");
        return NLPD_EINVAL;
    }
    *out = strndup(buf, (size_t)n);
    memset(buf, 0, sizeof buf);
    if (!*out) {
        snprintf(why, why_cap, "out of memory");
        return NLPD_EINVAL;
    }
    return 0;
}
