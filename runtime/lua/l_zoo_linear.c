/* Bindings of the linear attention kernels (filled by the zoo work). */
#include "l_util.h"

void l_open_zoo_linear(lua_State *L) { (void)L; }
