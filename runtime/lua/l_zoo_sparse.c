/* Bindings of the sparse attention kernels (filled by the zoo work). */
#include "l_util.h"

void l_open_zoo_sparse(lua_State *L) { (void)L; }
