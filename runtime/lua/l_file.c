#include "l_util.h"
void l_open_file(lua_State *L) { (void)L; }
