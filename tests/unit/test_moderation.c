/* Unit tests of the moderation lexicon matcher: obfuscations (case, accents, leetspeak, stretched and spelled-out
 * letters, intra-word marks, full-width and styled letters), innocent words that contain listed ones (Scunthorpe),
 * phrases, the allowlist, CJK/Thai substrings, per-language lists; and the real LDNOOBW/cuss lists when present
 * (models/lexicons or ../shared/models/moderation). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "moderation/lexicon.h"

static struct nlpd_lexicon *lx;
static struct nlpd_lexicon_scratch *sc;

static int hit_lang(const struct nlpd_lexicon *l, const char *lang, const char *text, const char **entry)
{
    struct nlpd_lexicon_hit h = {0};
    int rc = nlpd_lexicon_match(l, sc, lang, text, strlen(text), &h);
    if (entry)
        *entry = h.entry;
    return rc;
}

static int hit(const char *text)
{
    return hit_lang(lx, NULL, text, NULL);
}

#define FLAGGED(t)                                                                                                     \
    do {                                                                                                               \
        int r_ = hit(t);                                                                                               \
        if (r_ != 1) {                                                                                                 \
            fprintf(stderr, "  expected a hit in \"%s\" (got %d)\n", t, r_);                                           \
            CHECK(!"flagged");                                                                                         \
        }                                                                                                              \
    } while (0)
#define CLEAN(t)                                                                                                       \
    do {                                                                                                               \
        const char *e_ = NULL;                                                                                         \
        int r_ = hit_lang(lx, NULL, t, &e_);                                                                           \
        if (r_ != 0) {                                                                                                 \
            fprintf(stderr, "  expected no hit in \"%s\" (got %d: \"%s\")\n", t, r_, e_ ? e_ : "");                    \
            CHECK(!"clean");                                                                                           \
        }                                                                                                              \
    } while (0)

static void setup(void)
{
    struct nlpd_error err = {0};
    struct nlpd_lexicon_opts o = {.min_rating = 2};
    lx = nlpd_lexicon_new(&o, &err);
    sc = nlpd_lexicon_scratch_new();
    if (!lx || !sc)
        abort();
    static const char *const en[] = {"fuck", "shit",   "ass",   "asshole",       "cunt",      "dick",
                                     "cum",  "nigger", "bitch", "2 girls 1 cup", "ball sack", "blow job",
                                     "homo", "sex",    "anal",  "2g1c"};
    for (size_t i = 0; i < sizeof en / sizeof en[0]; i++)
        nlpd_lexicon_add(lx, "en", en[i], -1);
    nlpd_lexicon_add(lx, "de", "Scheiße", -1);
    nlpd_lexicon_add(lx, "de", "arschloch", -1);
    nlpd_lexicon_add(lx, "fr", "connard", -1);
    nlpd_lexicon_add(lx, "fr", "con", -1);
    nlpd_lexicon_add(lx, "fr", "enculé", -1);
    nlpd_lexicon_add(lx, "es", "coño", -1);
    nlpd_lexicon_add(lx, "es", "gilipollas", -1);
    nlpd_lexicon_add(lx, "it", "stronzo", -1);
    nlpd_lexicon_add(lx, "it", "vaffanculo", -1);
    nlpd_lexicon_add(lx, "ru", "хуй", -1);
    nlpd_lexicon_add(lx, "ru", "блядь", -1);
    nlpd_lexicon_add(lx, "zh", "他妈的", -1);
    nlpd_lexicon_add(lx, "zh", "乳", -1);
    nlpd_lexicon_add(lx, "zh", "13.", -1); /* no letters: left out */
    nlpd_lexicon_add(lx, "ja", "sm女王", -1);
    nlpd_lexicon_add(lx, "ja", "g スポット", -1);
    nlpd_lexicon_add(lx, "ja", "エッチ", -1);
    nlpd_lexicon_add(lx, "ko", "씨발", -1);
    nlpd_lexicon_add(lx, "th", "ควย", -1);
    nlpd_lexicon_add(lx, "th", "กู", -1);
    nlpd_lexicon_add(lx, "en-rated", "arse", 2);
    nlpd_lexicon_add(lx, "en-rated", "abortion", 1); /* below min_rating */
}

static void test_plain_words(void)
{
    FLAGGED("what the fuck");
    FLAGGED("Shit!");
    FLAGGED("you ASSHOLE.");
    FLAGGED("such a bitch, really");
    FLAGGED("kiss my arse");
    CLEAN("abortion rights");
    CLEAN("a perfectly nice sentence");
    CLEAN("");
    CLEAN("   \n\t ");
}

static void test_obfuscation(void)
{
    FLAGGED("fuuuuuck you");   /* runs to 1 */
    FLAGGED("kiss my asssss"); /* runs to 2 */
    FLAGGED("sh1t happens");
    FLAGGED("what a b1tch");
    FLAGGED("$hit");
    FLAGGED("@$$hole");
    FLAGGED("5h1t");
    FLAGGED("f.u.c.k this");
    FLAGGED("f-u-c-k this");
    FLAGGED("f u c k this");
    FLAGGED("i am a f u c k");
    FLAGGED("s h 1 t");
    FLAGGED("fu-ck");
    FLAGGED("sh.it");
    FLAGGED("FUCK");
    FLAGGED("ＦＵＣＫ");                                                         /* full width */
    FLAGGED("\xf0\x9d\x90\x9f\xf0\x9d\x90\xae\xf0\x9d\x90\x9c\xf0\x9d\x90\xa4"); /* math bold fuck */
    FLAGGED("fu\xe2\x80\x8b"
            "ck");                                      /* zero-width space */
    FLAGGED("f\xcc\xb8u\xcc\xb8\x63\xcc\xb8k\xcc\xb8"); /* combining overlay */
    FLAGGED("fück");
    FLAGGED("@dick");
    FLAGGED("2 girls 1 cup");
    FLAGGED("two  ball   sack"); /* phrase over several spaces */
    FLAGGED("ball-sack");
    FLAGGED("blow-job");
    FLAGGED("2g1c");
}

static void test_innocent(void)
{
    CLEAN("Scunthorpe United won");
    CLEAN("the assassin was classic");
    CLEAN("Essex, Sussex and Middlesex");
    CLEAN("cocktail analysis therapist");
    CLEAN("a shitake mushroom? no: shiitake");
    CLEAN("Samsung Galaxy A55"); /* digits: no leetspeak with more digits than letters */
    CLEAN("in 1990s there were 5 cups");
    CLEAN("I'm 13. Born in 2011"); /* "13." has no letters */
    CLEAN("hello, mass assembly"); /* no spelled-out runs */
    CLEAN("Dick Van Dyke sang");
    CLEAN("She graduated summa cum laude");
    CLEAN("Homo sapiens evolved");
    CLEAN("Ball. Sack race"); /* a phrase does not span sentence punctuation */
    CLEAN("J. R. R. Tolkien");
    CLEAN("A B C D E F");
    CLEAN("the dictionary");
    CLEAN("cumulative");
    CLEAN("sextant");
    CLEAN("canal");
    CLEAN("booooooring");
    CLEAN("hmmm brrr zzz wooow");
}

static void test_languages(void)
{
    FLAGGED("So eine Scheiße");
    FLAGGED("so eine scheisse"); /* ß case-folds to ss */
    FLAGGED("SCHEISSE");
    FLAGGED("du Arschloch");
    FLAGGED("quel connard");
    FLAGGED("va te faire enculer, enculé");
    FLAGGED("espèce d'encule"); /* accent stripped */
    FLAGGED("¡qué coño!");
    FLAGGED("que cono");
    FLAGGED("eres un gilipollas");
    FLAGGED("che stronzo");
    FLAGGED("VAFFANCULO");
    FLAGGED("иди на хуй");
    FLAGGED("ХУЙ");
    FLAGGED("блядь");
    CLEAN("Сколько стоит билет?");
    CLEAN("Das ist ein schöner Tag");
    CLEAN("le concert de Paris");
    CLEAN("construction");
    /* language-keyed lists */
    const char *e;
    CHECK(hit_lang(lx, "es", "café con leche", &e) == 0);
    CHECK(hit_lang(lx, NULL, "café con leche", &e) == 0); /* "con" is skipped when the language is unknown */
    CHECK(hit_lang(lx, "fr", "quel con", &e) == 1);
    CHECK(hit_lang(lx, "de", "what the fuck", &e) == 0); /* only the German list */
    CHECK(hit_lang(lx, "xx", "what the fuck", &e) == 0); /* no list, no fallback: not checked */
    CHECK(nlpd_lexicon_checks(lx, "xx") == 0);
    CHECK(nlpd_lexicon_checks(lx, "en-GB") && nlpd_lexicon_checks(lx, NULL) && nlpd_lexicon_checks(lx, ""));
    CHECK(hit_lang(lx, "en-GB", "what the fuck", &e) == 1);
    CHECK(nlpd_lexicon_has_language(lx, "de"));
    CHECK(nlpd_lexicon_has_language(lx, "pt") == 0);
}

/* A language without a list is checked only against the fallback lists; per-language allowlists apply to text
 * of that language only. */
static void test_fallback_and_lang_allow(void)
{
    struct nlpd_error err = {0};
    const char *fb[] = {"en-US"};
    const char *al_code[] = {"FR", "de"}, *al[] = {"con", "sacre bleu"};
    struct nlpd_lexicon_opts o = {
        .fallback = fb, .nfallback = 1, .allow_lang_code = al_code, .allow_lang = al, .nallow_lang = 2};
    struct nlpd_lexicon *l = nlpd_lexicon_new(&o, &err);
    CHECK(l != NULL);
    if (!l)
        return;
    nlpd_lexicon_add(l, "en", "ho", -1);
    nlpd_lexicon_add(l, "en", "fuck", -1);
    nlpd_lexicon_add(l, "fr", "con", -1);
    nlpd_lexicon_add(l, "fr", "connard", -1);
    nlpd_lexicon_add(l, "es", "coño", -1);
    nlpd_lexicon_add(l, "fr", "retard", -1);
    const char *e = NULL;
    CHECK(nlpd_lexicon_checks(l, "vi"));
    CHECK(hit_lang(l, "vi", "what the fuck", &e) == 1 && e && strcmp(e, "fuck") == 0); /* the fallback: en */
    CHECK(hit_lang(l, "vi", "quel connard", &e) == 0);                                 /* fr is no fallback */
    CHECK(hit_lang(l, "vi", "qué coño", &e) == 0);
    CHECK(hit_lang(l, NULL, "quel connard", &e) == 1); /* unknown language: every list */
    /* allowed per language: "con" in French text, not in the union (unknown language) nor other lists */
    CHECK(hit_lang(l, "fr", "quel con", &e) == 0);
    CHECK(hit_lang(l, "fr", "quel connard", &e) == 1);
    CHECK(hit_lang(l, "fr-CA", "quel con", &e) == 0);
    CHECK(nlpd_lexicon_has_language(l, "de") == 0);     /* an allowlist alone is no list */
    CHECK(hit_lang(l, "de", "what the fuck", &e) == 1); /* so German goes to the fallback */
    /* built-in: French "retard" means "late" */
    CHECK(hit_lang(l, "fr", "le train est en retard", &e) == 0);
    CHECK(hit_lang(l, "fr", "Retard de 20 minutes", &e) == 0);
    nlpd_lexicon_free(l);
    o.no_builtin_allow = 1;
    l = nlpd_lexicon_new(&o, &err);
    CHECK(l != NULL);
    if (l) {
        nlpd_lexicon_add(l, "fr", "retard", -1);
        CHECK(hit_lang(l, "fr", "le train est en retard", &e) == 1);
        nlpd_lexicon_free(l);
    }
}

static void test_cjk(void)
{
    const char *e = NULL;
    CHECK(hit_lang(lx, NULL, "你他妈的是谁", &e) == 1);
    CHECK(e && strcmp(e, "他妈的") == 0);
    FLAGGED("乳");
    FLAGGED("看 乳 了");
    CLEAN("我喜欢喝牛乳"); /* one-letter entries only stand alone */
    CLEAN("乳房");         /* not listed here */
    FLAGGED("これはエッチだ");
    FLAGGED("すごいsm女王です");
    FLAGGED("Gスポット");
    FLAGGED("g スポット");
    CLEAN("chasm女王"); /* "sm" inside a spaced word */
    FLAGGED("야 씨발놈아");
    FLAGGED("มึงควยมาก");
    CLEAN("กู้เงิน"); /* กู followed by a tone mark: another word */
    FLAGGED("กู ไม่");
    CLEAN("日本語のテキストです");
}

static void test_real_lists(void)
{
    const char *dirs[] = {"models/lexicons", "../shared/models/moderation"};
    const char *dir = NULL;
    struct stat st;
    for (size_t i = 0; i < 2 && !dir; i++)
        if (stat(dirs[i], &st) == 0)
            dir = dirs[i];
    if (!dir) {
        fprintf(stderr, "  (no word lists: real-list checks skipped)\n");
        return;
    }
    struct nlpd_error err = {0};
    struct nlpd_lexicon_opts o = {.min_rating = 2};
    struct nlpd_lexicon *r = nlpd_lexicon_load(dir, &o, &err);
    CHECK(r != NULL);
    if (!r) {
        fprintf(stderr, "  %s\n", err.message);
        return;
    }
    CHECK(nlpd_lexicon_nlists(r) >= 28);
    CHECK(nlpd_lexicon_size(r) > 3000);
    const char *e;
    static const char *const bad[][2] = {
        {"en", "what the fuck"}, {"en", "f.u.c.k off"},   {"en", "sh1t"},         {"de", "du Arschloch"},
        {"de", "SCHEISSE"},      {"fr", "quelle salope"}, {"es", "hijo de puta"}, {"it", "che stronzo"},
        {"ru", "иди на хуй"},    {"zh", "你他妈的"},      {"ja", "アナル"},       {"th", "ควย"},
        {NULL, "motherfucker"},  {NULL, "Scheiße"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (hit_lang(r, bad[i][0], bad[i][1], &e) != 1) {
            fprintf(stderr, "  real lists: expected a hit in \"%s\" (%s)\n", bad[i][1], bad[i][0] ? bad[i][0] : "all");
            CHECK(!"real hit");
        }
    static const char *const good[][2] = {
        {"en", "Scunthorpe is a town in Lincolnshire"},
        {"en", "The assassin studied classic literature"},
        {"en", "Dick Van Dyke starred in Mary Poppins"},
        {"en", "She graduated magna cum laude"},
        {"en", "Homo sapiens"},
        {"en", "The cocktail party was in Essex"},
        {"de", "Das Wetter ist heute schön"},
        {"fr", "Le concert commence à huit heures"},
        {"es", "Un café con leche, por favor"},
        {"it", "Vorrei un bicchiere d'acqua"},
        {"ru", "Сегодня хорошая погода"},
        {"zh", "我每天早上喝牛奶"},
        {"ja", "今日はいい天気ですね"},
        {NULL, "Un café con leche, por favor"},
        {"fr", "Le train est en retard de vingt minutes"}, /* the cuss French list has the English slur */
        {"fr", "Désolé pour le retard"},
        {"vi", "Các hộ gia đình ở Hà Nội"}, /* no Vietnamese list: "hộ" is not the English "ho" */
        {"vi", "Tôi là sinh viên"},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (hit_lang(r, good[i][0], good[i][1], &e) != 0) {
            fprintf(stderr, "  real lists: expected no hit in \"%s\" (%s), got \"%s\"\n", good[i][1],
                    good[i][0] ? good[i][0] : "all", e);
            CHECK(!"real clean");
        }
    CHECK(hit_lang(r, "en", "you retard", &e) == 1);      /* the English word stays flagged */
    CHECK(hit_lang(r, NULL, "Các hộ gia đình", &e) == 1); /* unknown language: every list, as documented */
    nlpd_lexicon_free(r);
    /* a fallback list must exist */
    const char *nofb[] = {"vi"};
    o.fallback = nofb;
    o.nfallback = 1;
    r = nlpd_lexicon_load(dir, &o, &err);
    CHECK(r == NULL);
    CHECK_STR_CONTAINS(err.message, "fallback language \"vi\"");
    nlpd_lexicon_free(r);
    const char *enfb[] = {"en"};
    o.fallback = enfb;
    r = nlpd_lexicon_load(dir, &o, &err);
    CHECK(r && hit_lang(r, "vi", "Các hộ gia đình", &e) == 1); /* asked for: the English list applies */
    nlpd_lexicon_free(r);
    o.fallback = NULL;
    o.nfallback = 0;
    /* one language only; an unknown one is an error */
    const char *langs[] = {"de"};
    o.languages = langs;
    o.nlanguages = 1;
    r = nlpd_lexicon_load(dir, &o, &err);
    CHECK(r && nlpd_lexicon_nlists(r) == 1);
    CHECK(r && hit_lang(r, NULL, "what the fuck", &e) == 0);
    nlpd_lexicon_free(r);
    const char *nolang[] = {"xx"};
    o.languages = nolang;
    r = nlpd_lexicon_load(dir, &o, &err);
    CHECK(r == NULL);
    CHECK_STR_CONTAINS(err.message, "xx");
    nlpd_lexicon_free(r);
}

static void test_load_errors(void)
{
    char dir[] = "/tmp/nlpd-lexXXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(!"mkdtemp");
        return;
    }
    char p[256];
    struct nlpd_error err = {0};
    snprintf(p, sizeof p, "%s/en.json", dir);
    FILE *f = fopen(p, "w");
    fputs("[\"fuck\", 3]", f);
    fclose(f);
    CHECK(nlpd_lexicon_load(p, NULL, &err) == NULL);
    CHECK_STR_CONTAINS(err.message, "not a string");
    f = fopen(p, "w");
    fputs("{\"fuck\": 2, \"adult\": 0}", f);
    fclose(f);
    struct nlpd_lexicon_opts o = {.min_rating = 1};
    struct nlpd_lexicon *r = nlpd_lexicon_load(dir, &o, &err);
    CHECK(r && nlpd_lexicon_size(r) == 1);
    nlpd_lexicon_free(r);
    f = fopen(p, "w");
    fputs("[\"fuck\"", f);
    fclose(f);
    CHECK(nlpd_lexicon_load(dir, NULL, &err) == NULL);
    CHECK_STR_CONTAINS(err.message, "en.json");
    remove(p);
    CHECK(nlpd_lexicon_load(dir, NULL, &err) == NULL);
    CHECK_STR_CONTAINS(err.message, "no word lists");
    rmdir(dir);
    CHECK(nlpd_lexicon_load(dir, NULL, &err) == NULL);
    CHECK_STR_CONTAINS(err.message, "not found");
}

int main(void)
{
    setup();
    RUN(test_plain_words);
    RUN(test_obfuscation);
    RUN(test_innocent);
    RUN(test_languages);
    RUN(test_fallback_and_lang_allow);
    RUN(test_cjk);
    RUN(test_real_lists);
    RUN(test_load_errors);
    nlpd_lexicon_free(lx);
    nlpd_lexicon_scratch_free(sc);
    return TEST_REPORT();
}
