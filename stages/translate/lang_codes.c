/* Built-in language-code tables (see lang_codes.h). */
#include "lang_codes.h"

#include <string.h>

/* lid.176 / ISO 639-1 code -> FLORES-200 (the codes of NLLB-200's tokenizer) */
static const char *const kFlores[][2] = {
    {"ace", "ace_Latn"}, {"af", "afr_Latn"}, {"ak", "aka_Latn"}, {"am", "amh_Ethi"}, {"ar", "arb_Arab"},
    {"arz", "arz_Arab"}, {"as", "asm_Beng"}, {"ast", "ast_Latn"}, {"awa", "awa_Deva"}, {"ay", "ayr_Latn"},
    {"az", "azj_Latn"}, {"azb", "azb_Arab"}, {"ba", "bak_Cyrl"}, {"bm", "bam_Latn"}, {"ban", "ban_Latn"},
    {"be", "bel_Cyrl"}, {"bem", "bem_Latn"}, {"bn", "ben_Beng"}, {"bho", "bho_Deva"}, {"bjn", "bjn_Latn"},
    {"bo", "bod_Tibt"}, {"bs", "bos_Latn"}, {"bug", "bug_Latn"}, {"bg", "bul_Cyrl"}, {"ca", "cat_Latn"},
    {"ceb", "ceb_Latn"}, {"cs", "ces_Latn"}, {"ckb", "ckb_Arab"}, {"crh", "crh_Latn"}, {"cy", "cym_Latn"},
    {"da", "dan_Latn"}, {"de", "deu_Latn"}, {"dz", "dzo_Tibt"}, {"el", "ell_Grek"}, {"en", "eng_Latn"},
    {"eo", "epo_Latn"}, {"et", "est_Latn"}, {"eu", "eus_Latn"}, {"ee", "ewe_Latn"}, {"fo", "fao_Latn"},
    {"fa", "pes_Arab"}, {"fj", "fij_Latn"}, {"fi", "fin_Latn"}, {"fon", "fon_Latn"}, {"fr", "fra_Latn"},
    {"fur", "fur_Latn"}, {"ff", "fuv_Latn"}, {"gd", "gla_Latn"}, {"ga", "gle_Latn"}, {"gl", "glg_Latn"},
    {"gn", "grn_Latn"}, {"gu", "guj_Gujr"}, {"ht", "hat_Latn"}, {"ha", "hau_Latn"}, {"he", "heb_Hebr"},
    {"iw", "heb_Hebr"}, {"hi", "hin_Deva"}, {"hne", "hne_Deva"}, {"hr", "hrv_Latn"}, {"hu", "hun_Latn"},
    {"hy", "hye_Armn"}, {"ig", "ibo_Latn"}, {"ilo", "ilo_Latn"}, {"id", "ind_Latn"}, {"in", "ind_Latn"},
    {"is", "isl_Latn"}, {"it", "ita_Latn"}, {"jv", "jav_Latn"}, {"ja", "jpn_Jpan"}, {"kab", "kab_Latn"},
    {"kac", "kac_Latn"}, {"kam", "kam_Latn"}, {"kn", "kan_Knda"}, {"ks", "kas_Arab"}, {"ka", "kat_Geor"},
    {"kr", "knc_Latn"}, {"kk", "kaz_Cyrl"}, {"kbp", "kbp_Latn"}, {"kea", "kea_Latn"}, {"km", "khm_Khmr"},
    {"ki", "kik_Latn"}, {"rw", "kin_Latn"}, {"ky", "kir_Cyrl"}, {"kmb", "kmb_Latn"}, {"kg", "kon_Latn"},
    {"ko", "kor_Hang"}, {"ku", "kmr_Latn"}, {"lo", "lao_Laoo"}, {"lv", "lvs_Latn"}, {"lij", "lij_Latn"},
    {"li", "lim_Latn"}, {"ln", "lin_Latn"}, {"lt", "lit_Latn"}, {"lmo", "lmo_Latn"}, {"ltg", "ltg_Latn"},
    {"lb", "ltz_Latn"}, {"lua", "lua_Latn"}, {"lg", "lug_Latn"}, {"luo", "luo_Latn"}, {"lus", "lus_Latn"},
    {"mag", "mag_Deva"}, {"mai", "mai_Deva"}, {"ml", "mal_Mlym"}, {"mr", "mar_Deva"}, {"min", "min_Latn"},
    {"mk", "mkd_Cyrl"}, {"mg", "plt_Latn"}, {"mt", "mlt_Latn"}, {"mni", "mni_Beng"}, {"mn", "khk_Cyrl"},
    {"mos", "mos_Latn"}, {"mi", "mri_Latn"}, {"ms", "zsm_Latn"}, {"my", "mya_Mymr"}, {"nl", "nld_Latn"},
    {"nn", "nno_Latn"}, {"no", "nob_Latn"}, {"nb", "nob_Latn"}, {"ne", "npi_Deva"}, {"nso", "nso_Latn"},
    {"nus", "nus_Latn"}, {"ny", "nya_Latn"}, {"oc", "oci_Latn"}, {"om", "gaz_Latn"}, {"or", "ory_Orya"},
    {"pag", "pag_Latn"}, {"pa", "pan_Guru"}, {"pap", "pap_Latn"}, {"pl", "pol_Latn"}, {"pt", "por_Latn"},
    {"prs", "prs_Arab"}, {"ps", "pbt_Arab"}, {"qu", "quy_Latn"}, {"ro", "ron_Latn"}, {"rn", "run_Latn"},
    {"ru", "rus_Cyrl"}, {"sg", "sag_Latn"}, {"sa", "san_Deva"}, {"sat", "sat_Beng"}, {"scn", "scn_Latn"},
    {"shn", "shn_Mymr"}, {"si", "sin_Sinh"}, {"sk", "slk_Latn"}, {"sl", "slv_Latn"}, {"sm", "smo_Latn"},
    {"sn", "sna_Latn"}, {"sd", "snd_Arab"}, {"so", "som_Latn"}, {"st", "sot_Latn"}, {"es", "spa_Latn"},
    {"sq", "als_Latn"}, {"als", "als_Latn"}, {"sc", "srd_Latn"}, {"sr", "srp_Cyrl"}, {"ss", "ssw_Latn"},
    {"su", "sun_Latn"}, {"sv", "swe_Latn"}, {"sw", "swh_Latn"}, {"szl", "szl_Latn"}, {"ta", "tam_Taml"},
    {"tt", "tat_Cyrl"}, {"te", "tel_Telu"}, {"tg", "tgk_Cyrl"}, {"tl", "tgl_Latn"}, {"fil", "tgl_Latn"},
    {"th", "tha_Thai"}, {"ti", "tir_Ethi"}, {"tpi", "tpi_Latn"}, {"tn", "tsn_Latn"}, {"ts", "tso_Latn"},
    {"tk", "tuk_Latn"}, {"tum", "tum_Latn"}, {"tr", "tur_Latn"}, {"tw", "twi_Latn"}, {"tzm", "tzm_Tfng"},
    {"ug", "uig_Arab"}, {"uk", "ukr_Cyrl"}, {"umb", "umb_Latn"}, {"ur", "urd_Arab"}, {"uz", "uzn_Latn"},
    {"vec", "vec_Latn"}, {"vi", "vie_Latn"}, {"war", "war_Latn"}, {"wo", "wol_Latn"}, {"xh", "xho_Latn"},
    {"yi", "ydd_Hebr"}, {"ji", "ydd_Hebr"}, {"yo", "yor_Latn"}, {"yue", "yue_Hant"}, {"zh", "zho_Hans"},
    {"zu", "zul_Latn"},
    /* ISO 639-3 macro-languages and 639-2/B codes whose FLORES-200 member has another prefix */
    {"ara", "arb_Arab"}, {"fas", "pes_Arab"}, {"per", "pes_Arab"}, {"msa", "zsm_Latn"}, {"may", "zsm_Latn"},
    {"zho", "zho_Hans"}, {"chi", "zho_Hans"}, {"lav", "lvs_Latn"}, {"nor", "nob_Latn"}, {"swa", "swh_Latn"},
    {"aze", "azj_Latn"}, {"uzb", "uzn_Latn"}, {"mon", "khk_Cyrl"}, {"mlg", "plt_Latn"}, {"orm", "gaz_Latn"},
    {"pus", "pbt_Arab"}, {"que", "quy_Latn"}, {"sqi", "als_Latn"}, {"alb", "als_Latn"}, {"yid", "ydd_Hebr"},
    {"kur", "kmr_Latn"}, {"nep", "npi_Deva"}, {"ori", "ory_Orya"}, {"ger", "deu_Latn"}, {"fre", "fra_Latn"},
    {"dut", "nld_Latn"}, {"gre", "ell_Grek"}, {"cze", "ces_Latn"}, {"wel", "cym_Latn"}, {"ice", "isl_Latn"},
    {"arm", "hye_Armn"}, {"geo", "kat_Geor"}, {"mac", "mkd_Cyrl"}, {"rum", "ron_Latn"}, {"slo", "slk_Latn"},
    {"baq", "eus_Latn"}, {"bur", "mya_Mymr"}, {"tib", "bod_Tibt"}, {"est", "est_Latn"}, {"kon", "kon_Latn"},
};

/* other spellings of M2M100's codes */
static const char *const kM2M100Alias[][2] = {
    {"nb", "no"}, {"nn", "no"}, {"fil", "tl"}, {"iw", "he"}, {"in", "id"}, {"ji", "yi"}, {"nso", "ns"},
    {"als", "sq"},
};

static const char *const kLid176[] = {
    "af", "als", "am", "an", "ar", "arz", "as", "ast", "av", "az", "azb", "ba", "bar", "bcl", "be", "bg", "bh",
    "bn", "bo", "bpy", "br", "bs", "bxr", "ca", "cbk", "ce", "ceb", "ckb", "co", "cs", "cv", "cy", "da", "de",
    "diq", "dsb", "dty", "dv", "el", "eml", "en", "eo", "es", "et", "eu", "fa", "fi", "fr", "frr", "fy", "ga",
    "gd", "gl", "gn", "gom", "gu", "gv", "he", "hi", "hif", "hr", "hsb", "ht", "hu", "hy", "ia", "id", "ie",
    "ilo", "io", "is", "it", "ja", "jbo", "jv", "ka", "kk", "km", "kn", "ko", "krc", "ku", "kv", "kw", "ky",
    "la", "lb", "lez", "li", "lmo", "lo", "lrc", "lt", "lv", "mai", "mg", "mhr", "min", "mk", "ml", "mn", "mr",
    "mrj", "ms", "mt", "mwl", "my", "myv", "mzn", "nah", "nap", "nds", "ne", "new", "nl", "nn", "no", "oc", "or",
    "os", "pa", "pam", "pfl", "pl", "pms", "pnb", "ps", "pt", "qu", "rm", "ro", "ru", "rue", "sa", "sah", "sc",
    "scn", "sco", "sd", "sh", "si", "sk", "sl", "so", "sq", "sr", "su", "sv", "sw", "ta", "te", "tg", "th", "tk",
    "tl", "tr", "tt", "tyv", "ug", "uk", "ur", "uz", "vec", "vep", "vi", "vls", "vo", "wa", "war", "wuu", "xal",
    "xmf", "yi", "yo", "yue", "zh"};

#define COUNT(a) (sizeof a / sizeof *a)

const char *nlpd_lang_flores200(const char *code)
{
    for (size_t i = 0; i < COUNT(kFlores); i++)
        if (!strcmp(kFlores[i][0], code))
            return kFlores[i][1];
    if (strlen(code) == 3) /* an ISO 639-3 code: the FLORES-200 code it prefixes */
        for (size_t i = 0; i < COUNT(kFlores); i++)
            if (!strncmp(kFlores[i][1], code, 3) && kFlores[i][1][3] == '_')
                return kFlores[i][1];
    return NULL;
}

const char *nlpd_lang_m2m100(const char *code)
{
    for (size_t i = 0; i < COUNT(kM2M100Alias); i++)
        if (!strcmp(kM2M100Alias[i][0], code))
            return kM2M100Alias[i][1];
    if (strlen(code) == 3) { /* ISO 639-3 -> the two-letter code of the same FLORES-200 language */
        const char *f = nlpd_lang_flores200(code);
        for (size_t i = 0; f && i < COUNT(kFlores); i++)
            if (!strcmp(kFlores[i][1], f) && strlen(kFlores[i][0]) == 2)
                return kFlores[i][0];
    }
    return code;
}

size_t nlpd_lang_lid176_count(void)
{
    return COUNT(kLid176);
}

const char *nlpd_lang_lid176(size_t i)
{
    return i < COUNT(kLid176) ? kLid176[i] : NULL;
}
