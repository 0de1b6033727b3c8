/* PyTorch-style text of a tensor: "tensor([[1.0000, 2.0000], ...])". */
#ifndef AS_TENSOR_PRINT_H
#define AS_TENSOR_PRINT_H

#include "attnswap/tensor.h"

/* A malloc'd string (free it), or NULL when out of memory.  Tensors with more
 * than 1000 elements are summarised with "..." (3 edge items per dim), as
 * torch does; device tensors are read through a CPU copy. */
char *as_tensor_format(const as_tensor *t);

#endif
