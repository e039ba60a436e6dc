/* limits.h - every named limit on outside input, in one place.
 *
 * Parsers check each length read from the wire or a file against the bytes
 * actually present and against one of these before allocating anything.
 */
#ifndef PACS_LIMITS_H
#define PACS_LIMITS_H

/* Deepest nesting of sequences (SQ -> item -> SQ ...) accepted. */
#define PACS_MAX_SEQ_DEPTH 32
/* Largest single element value accepted (bytes); pixel data of a large
 * multi-frame instance fits, a corrupt 0xFFFFFFF0 length does not. */
#define PACS_MAX_VALUE_LEN (1u << 31)
/* Largest file meta information group (group 0002) accepted, bytes. */
#define PACS_MAX_META_LEN (64u * 1024)
/* Most elements in one data set or item. */
#define PACS_MAX_ELEMENTS (1u << 20)
/* Most items in one sequence, and fragments in encapsulated pixel data. */
#define PACS_MAX_ITEMS (1u << 20)
/* Largest inflated size of a Deflated Explicit VR Little Endian data set. */
#define PACS_MAX_INFLATED_LEN (1ull << 32)
/* Largest DICOM JSON document accepted by the JSON reader, bytes. */
#define PACS_MAX_JSON_LEN (256u * 1024 * 1024)
/* Largest single string value after character-set decoding, bytes. */
#define PACS_MAX_STRING_LEN (64u * 1024 * 1024)

/* Largest A-ASSOCIATE-RQ/AC PDU accepted, bytes (a full 128-context
 * proposal with several syntaxes each is about 20 KB). */
#define PACS_MAX_ASSOC_PDU_LEN (64u * 1024)
/* Largest User Identity field (a JWT or SAML assertion), bytes. */
#define PACS_MAX_USER_IDENTITY_LEN (32u * 1024)
/* Largest DIMSE command set, bytes (real ones are under 300). */
#define PACS_MAX_COMMAND_LEN (64u * 1024)
/* Largest C-FIND/C-MOVE/C-GET identifier, bytes. */
#define PACS_MAX_IDENTIFIER_LEN (1u << 20)
/* Most values in one UID-list or multi-value query key. */
#define PACS_MAX_QUERY_LIST 65536
/* Largest configuration file (and *_FILE secret), bytes. */
#define PACS_MAX_CONFIG_FILE_LEN (1024u * 1024)
/* Most frames an instance may declare (NumberOfFrames): a million frames
 * is far beyond any acquisition (a long cine has a few thousand). */
#define PACS_MAX_FRAMES (1u << 20)
/* Most media ranges in one Accept header (browsers send under 10). */
#define PACS_MAX_ACCEPT_RANGES 32
/* Largest WADO-RS /metadata answer held in memory, bytes (a study of
 * 10,000 instances of about 5 KB of metadata each is 50 MB). */
#define PACS_MAX_METADATA_ANSWER (512u * 1024 * 1024)

#endif
