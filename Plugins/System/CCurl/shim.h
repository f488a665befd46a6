// libcurl for the ecosystem plugins (Debian's libcurl4-openssl-dev). Swift cannot call C's
// variadic functions, so curl_easy_setopt and curl_easy_getinfo get one typed wrapper per kind of
// argument.
#pragma once
#include <curl/curl.h>

typedef size_t (*shardwork_curl_data_callback)(char *buffer, size_t size, size_t count, void *context);
typedef int (*shardwork_curl_progress_callback)(void *context, curl_off_t download_total, curl_off_t downloaded,
                                                curl_off_t upload_total, curl_off_t uploaded);

static inline CURLcode shardwork_curl_set_long(CURL *curl, CURLoption option, long value) {
    return curl_easy_setopt(curl, option, value);
}

static inline CURLcode shardwork_curl_set_string(CURL *curl, CURLoption option, const char *value) {
    return curl_easy_setopt(curl, option, value);
}

static inline CURLcode shardwork_curl_set_pointer(CURL *curl, CURLoption option, void *value) {
    return curl_easy_setopt(curl, option, value);
}

static inline CURLcode shardwork_curl_set_list(CURL *curl, CURLoption option, struct curl_slist *value) {
    return curl_easy_setopt(curl, option, value);
}

static inline CURLcode shardwork_curl_set_size(CURL *curl, CURLoption option, curl_off_t value) {
    return curl_easy_setopt(curl, option, value);
}

static inline CURLcode shardwork_curl_set_data_callback(CURL *curl, CURLoption option, shardwork_curl_data_callback callback) {
    return curl_easy_setopt(curl, option, callback);
}

static inline CURLcode shardwork_curl_set_progress_callback(CURL *curl, shardwork_curl_progress_callback callback) {
    return curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, callback);
}

static inline CURLcode shardwork_curl_get_long(CURL *curl, CURLINFO info, long *value) {
    return curl_easy_getinfo(curl, info, value);
}
