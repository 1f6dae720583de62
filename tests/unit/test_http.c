/* The metrics server's request-head parser: methods, targets, versions, keep-alive and body detection, and the
 * malformed heads it must refuse (answered 400). The server's limits are tested end to end in
 * tests/integration/test_metrics.sh. */
#include <string.h>

#include "harness.h"
#include "http.h"

static int parse(const char *head, struct nlpd_http_request *r)
{
    return nlpd_http_parse_head(head, strlen(head), r);
}

static void methods_and_paths(void)
{
    struct nlpd_http_request r;
    CHECK(parse("GET /metrics HTTP/1.1\r\nHost: x\r\n", &r) == 0);
    CHECK(r.method == NLPD_HTTP_GET && r.path_len == 8 && !memcmp(r.path, "/metrics", 8) && r.keep_alive &&
          !r.has_body);
    CHECK(parse("HEAD /live?x=1#f HTTP/1.0\n", &r) == 0);
    CHECK(r.method == NLPD_HTTP_HEAD && r.path_len == 5 && !r.keep_alive);
    CHECK(parse("POST /metrics HTTP/1.1\r\n", &r) == 0);
    /* answered 405, then closed */
    CHECK(r.method == NLPD_HTTP_OTHER && !r.keep_alive);
    /* methods are case-sensitive */
    CHECK(parse("get /metrics HTTP/1.1\r\n", &r) == 0 && r.method == NLPD_HTTP_OTHER);
}

static void keep_alive_and_bodies(void)
{
    struct nlpd_http_request r;
    CHECK(parse("GET / HTTP/1.1\r\nConnection: Close\r\n", &r) == 0 && !r.keep_alive);
    CHECK(parse("GET / HTTP/1.1\r\nConnection: upgrade, close\r\n", &r) == 0 && !r.keep_alive);
    CHECK(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n", &r) == 0 && r.keep_alive);
    CHECK(parse("GET / HTTP/1.1\r\nContent-Length: 0\r\n", &r) == 0 && !r.has_body && r.keep_alive);
    CHECK(parse("GET / HTTP/1.1\r\ncontent-length: 5\r\n", &r) == 0 && r.has_body && !r.keep_alive);
    CHECK(parse("GET / HTTP/1.1\r\nContent-Length: x\r\n", &r) == 0 && r.has_body && !r.keep_alive);
    CHECK(parse("GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n", &r) == 0 && r.has_body && !r.keep_alive);
}

static void malformed(void)
{
    struct nlpd_http_request r;
    const char *bad[] = {
        "",
        "GET",
        "GET /",
        "GET / HTTP/2.0",
        "GET / HTTP/1.1x",
        "GET  / HTTP/1.1",
        " GET / HTTP/1.1",
        "GET /a\x01 HTTP/1.1",
        "G(T / HTTP/1.1",
        "GETGETGETGETGETGETGETGETGETGETGETG / HTTP/1.1", /* a method over 32 characters */
        "GET / HTTP/1.1\r\nno colon\r\n",
        "GET / HTTP/1.1\r\n: empty name\r\n",
        "GET / HTTP/1.1\r\nA: b\r\n folded\r\n",
        "GET / HTTP/1.1\r\nBad Name: b\r\n",
        "GET / HTTP/1.1\r\nA: b\x01\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (parse(bad[i], &r) != -1) {
            fprintf(stderr, "accepted: \"%s\"\n", bad[i]);
            CHECK(0);
        }
    }
    /* a NUL inside the head is data, not an end */
    CHECK(nlpd_http_parse_head("GET /\0x HTTP/1.1", 16, &r) == -1);
}

int main(void)
{
    RUN(methods_and_paths);
    RUN(keep_alive_and_bodies);
    RUN(malformed);
    return TEST_REPORT();
}
