/* utf8.h - well-formedness of UTF-8 text (Unicode ch. 3, table 3-7): no
 * overlong forms, no surrogates, nothing past U+10FFFF. No allocation. */
#ifndef PACS_UTF8_H
#define PACS_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Length (1-4) of the well-formed sequence that starts s[0..n), or 0 when
 * s does not start with one (including a sequence cut off by n). n >= 1. */
size_t utf8_seq_len(const uint8_t *s, size_t n);
/* True if all of s[0..n) is well-formed UTF-8 (an empty string is). */
bool utf8_valid(const uint8_t *s, size_t n);

#endif
