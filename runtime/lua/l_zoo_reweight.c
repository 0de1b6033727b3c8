/* Bindings of the reweight attention kernels (filled by the zoo work). */
#include "l_util.h"

void l_open_zoo_reweight(lua_State *L) { (void)L; }
