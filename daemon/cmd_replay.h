/* `nlpd replay`: dead letters back to their topics (cmd_replay.c). */
#ifndef NLPD_CMD_REPLAY_H
#define NLPD_CMD_REPLAY_H

/* argv[0] is "replay"; returns the process exit status (0: every matched record acknowledged, 1: not, 2: usage). */
int nlpd_cmd_replay(int argc, char **argv);

#endif
