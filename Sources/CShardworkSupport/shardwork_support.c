/* The helpers are inline, in include/shardwork_support.h; a C target needs one source file. */
#include "shardwork_support.h"
