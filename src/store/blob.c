/* blob.c - what every blob backend shares: the key rule. */
#include "store/blob.h"

bool blob_key_valid(const char *key)
{
    if (!key)
        return false;
    size_t n = 0;
    for (; key[n]; n++) {
        char c = key[n];
        if (n >= BLOB_KEY_MAX || !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z')))
            return false;
    }
    return n > 0;
}
