/* Usage texts of the commands (DESIGN.md §9): `nlpd help`, `nlpd COMMAND --help` and the man page's COMMANDS
 * section come from one table. */
#ifndef NLPD_CLI_HELP_H
#define NLPD_CLI_HELP_H

#include <stdio.h>

/* 1 when cmd is a command of the table. */
int nlpd_cli_known(const char *cmd);
/* The list of commands with their synopses. */
void nlpd_cli_usage(FILE *out);
/* One command's usage and options; -1 when cmd is unknown. */
int nlpd_cli_command_usage(const char *cmd, FILE *out);
/* The commands as roff .TP paragraphs, for nlpd.1 (scripts/gen-man.sh). */
void nlpd_cli_man(FILE *out);

#endif
