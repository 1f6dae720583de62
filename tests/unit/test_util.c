/* common/nlpd_util: the capped file reader and the model-folder JSON loader. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "nlpd_util.h"

static char dir[] = "/tmp/nlpd-util-XXXXXX";

static void put(const char *name, const char *data, size_t n)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    fwrite(data, 1, n, f);
    fclose(f);
}

static void read_file(void)
{
    char p[256], *buf = (char *)1;
    size_t len = 7;
    struct nlpd_error err = {0};
    snprintf(p, sizeof p, "%s/missing", dir);
    CHECK(nlpd_util_read_file(p, 100, &buf, &len, &err) == NLPD_ENOTFOUND && !buf && len == 0);
    CHECK_STR_CONTAINS(err.message, "missing: cannot open");
    /* exactly max bytes is fine, one more is not */
    put("ten", "0123456789", 10);
    snprintf(p, sizeof p, "%s/ten", dir);
    CHECK(nlpd_util_read_file(p, 10, &buf, &len, &err) == 0 && len == 10 && !strcmp(buf, "0123456789"));
    free(buf);
    CHECK(nlpd_util_read_file(p, 9, &buf, &len, &err) == NLPD_ERANGE && !buf);
    CHECK_STR_CONTAINS(err.message, "larger than 9 bytes");
    put("empty", "", 0);
    snprintf(p, sizeof p, "%s/empty", dir);
    CHECK(nlpd_util_read_file(p, 10, &buf, &len, &err) == 0 && len == 0 && buf && buf[0] == 0);
    free(buf);
    /* not a regular file: no size from stat, read to the end (and to the cap) by growing */
    CHECK(nlpd_util_read_file("/dev/null", 10, &buf, &len, &err) == 0 && len == 0);
    free(buf);
    CHECK(nlpd_util_read_file("/dev/zero", 100000, &buf, &len, &err) == NLPD_ERANGE && !buf);
    CHECK(nlpd_util_read_file(dir, 100, &buf, &len, &err) == NLPD_EIO && !buf);
    CHECK_STR_CONTAINS(err.message, "read error");
    /* a file larger than the first chunk read without a size (a pipe through /dev/stdin is not portable to
     * every runner; /proc files report size 0) */
    CHECK(nlpd_util_read_file("/proc/self/maps", (size_t)1 << 24, &buf, &len, &err) == 0 && len > 0 &&
          strlen(buf) == len);
    free(buf);
}

static void load_json(void)
{
    json_t *j = (json_t *)1;
    struct nlpd_error err = {0};
    CHECK(nlpd_util_load_json(dir, "absent.json", NLPD_UTIL_JSON_OPTIONAL, &j, &err) == 0 && !j);
    CHECK(nlpd_util_load_json(dir, "absent.json", 0, &j, &err) == NLPD_ENOTFOUND && !j);
    CHECK_STR_CONTAINS(err.message, "absent.json");
    put("bad.json", "{\"a\": ", 6);
    CHECK(nlpd_util_load_json(dir, "bad.json", NLPD_UTIL_JSON_OPTIONAL, &j, &err) == NLPD_EFORMAT && !j);
    CHECK_STR_CONTAINS(err.message, "bad.json: invalid JSON");
    put("arr.json", "[1]", 3);
    CHECK(nlpd_util_load_json(dir, "arr.json", 0, &j, &err) == NLPD_EFORMAT && !j);
    CHECK_STR_CONTAINS(err.message, "not a JSON object");
    put("ok.json", "{\"model_type\": \"bert\"}", 22);
    CHECK(nlpd_util_load_json(dir, "ok.json", 0, &j, &err) == 0 && j);
    CHECK(!strcmp(json_string_value(json_object_get(j, "model_type")), "bert"));
    json_decref(j);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 2;
    RUN(read_file);
    RUN(load_json);
    const char *names[] = {"ten", "empty", "bad.json", "arr.json", "ok.json"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char p[256];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        unlink(p);
    }
    rmdir(dir);
    return TEST_REPORT();
}
