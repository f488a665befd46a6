// OpenSSL's libcrypto (Debian's libssl-dev), for HMAC-SHA256.
#pragma once
#include <openssl/evp.h>
#include <openssl/hmac.h>
