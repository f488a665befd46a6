// libffi (Debian's libffi-dev), through which the native job calls C functions. Its type
// descriptors are mutable C globals; these accessors hand Swift their addresses.
#pragma once
#include <ffi.h>

static inline ffi_type *shardwork_ffi_void(void) { return &ffi_type_void; }
static inline ffi_type *shardwork_ffi_sint32(void) { return &ffi_type_sint32; }
static inline ffi_type *shardwork_ffi_sint64(void) { return &ffi_type_sint64; }
static inline ffi_type *shardwork_ffi_pointer(void) { return &ffi_type_pointer; }
