// Compile-time checks of the layout promises that shardwork_plugin.h makes.
#include "shardwork_plugin.h"
#include <stddef.h>

_Static_assert(offsetof(shardwork_plugin_descriptor, magic) == 0, "magic moved");
_Static_assert(offsetof(shardwork_plugin_descriptor, abi_major) == 8, "abi_major moved");
_Static_assert(offsetof(shardwork_plugin_descriptor, abi_minor) == 10, "abi_minor moved");
_Static_assert(offsetof(shardwork_plugin_descriptor, descriptor_size) == 12, "descriptor_size moved");
_Static_assert(sizeof(void *) == 8, "Shardwork plugins are built for 64-bit targets");
