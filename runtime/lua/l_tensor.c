#include "l_util.h"
void l_open_tensor(lua_State *L) { (void)L; }
