/* `nlpd infer` and `nlpd tokenize` (see cmd_model.h). The transformer engine they drive is being built
 * (issue: transformer engine on CPU); until it lands they say so and exit 2. */
#include "cmd_model.h"

#include <stdio.h>

int nlpd_cmd_infer(int argc, char **argv)
{
    (void)argc;
    fprintf(stderr, "nlpd %s: the transformer engine is not part of this build yet\n", argv[0]);
    return 2;
}

int nlpd_cmd_tokenize(int argc, char **argv)
{
    return nlpd_cmd_infer(argc, argv);
}
