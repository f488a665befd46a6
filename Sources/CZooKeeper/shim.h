// The ZooKeeper C client (Debian's libzookeeper-mt-dev), as Swift sees it.
#ifndef SHARDWORK_CZOOKEEPER_SHIM_H
#define SHARDWORK_CZOOKEEPER_SHIM_H

// The synchronous API and the multi-threaded client are declared only under THREADED.
#ifndef THREADED
#define THREADED 1
#endif
#include <zookeeper/zookeeper.h>

// The ACL globals are mutable C variables, which Swift 6 refuses to read directly.
static inline struct ACL_vector *shardwork_zk_open_acl_unsafe(void) { return &ZOO_OPEN_ACL_UNSAFE; }
static inline struct ACL_vector *shardwork_zk_creator_all_acl(void) { return &ZOO_CREATOR_ALL_ACL; }

#endif
