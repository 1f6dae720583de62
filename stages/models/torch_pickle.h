/* pytorch_model.bin (torch.save's zip format: <name>/data.pkl + <name>/data/<key> blobs, stored uncompressed;
 * or the pre-1.6 format: pickles followed by the storages) read WITHOUT running pickle code: a restricted unpickler
 * that knows only the opcodes a saved state dict uses and only the globals collections.OrderedDict,
 * torch._utils._rebuild_tensor_v2 and torch's storage classes (FloatStorage, HalfStorage, BFloat16Storage, ... as
 * torch 1.x/2.x write them). Anything else is refused with an error naming the opcode or global. Tensors must be
 * contiguous (a state dict's are); their data points into the caller's buffer. */
#ifndef NLPD_TORCH_PICKLE_H
#define NLPD_TORCH_PICKLE_H

#include <stddef.h>

#include "nlpd_error.h"
#include "safetensors.h"

/* Parses the file image buf[0..size) (borrowed; tensors point into it). On success *out (malloc'ed, n entries,
 * sorted by nothing in particular) holds the tensors, each name malloc'ed (free each name, then the array);
 * name is used in error messages. 0 or a negative code with err set. */
int nlpd_torch_load(const unsigned char *buf, size_t size, const char *name, struct nlpd_st_tensor **out, size_t *n,
                    struct nlpd_error *err);

#endif
