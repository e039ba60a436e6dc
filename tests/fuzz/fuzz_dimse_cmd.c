/* libFuzzer target: the DIMSE command set codec (net/dimse_cmd).
 * Invariants: an error has a message and leaves a zeroed struct; whatever
 * the decoder accepts the encoder writes, decoding that gives the same
 * values, and encoding those again gives the same bytes. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/dimse_cmd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Our own check macro: fuzz_common.h pulls in the Part 10 reader. */
#define CHECK(cond, ...)                                               \
    do {                                                               \
        if (!(cond)) {                                                 \
            fprintf(stderr, "fuzz invariant broken: " __VA_ARGS__);    \
            fprintf(stderr, "\n");                                     \
            abort();                                                   \
        }                                                              \
    } while (0)

static bool same_cmd(const struct dimse_cmd *a, const struct dimse_cmd *b)
{
    if (a->present != b->present || a->command_field != b->command_field ||
        a->message_id != b->message_id || a->message_id_responded != b->message_id_responded ||
        a->priority != b->priority || a->dataset_type != b->dataset_type || a->status != b->status ||
        a->offending_element_n != b->offending_element_n || a->move_originator_id != b->move_originator_id ||
        a->n_remaining != b->n_remaining || a->n_completed != b->n_completed ||
        a->n_failed != b->n_failed || a->n_warning != b->n_warning ||
        strcmp(a->affected_sop_class, b->affected_sop_class) ||
        strcmp(a->requested_sop_class, b->requested_sop_class) ||
        strcmp(a->move_destination, b->move_destination) ||
        strcmp(a->affected_sop_instance, b->affected_sop_instance) ||
        strcmp(a->requested_sop_instance, b->requested_sop_instance) ||
        strcmp(a->error_comment, b->error_comment) ||
        strcmp(a->move_originator_aet, b->move_originator_aet))
        return false;
    for (unsigned i = 0; i < a->offending_element_n; i++)
        if (a->offending_element[i] != b->offending_element[i])
            return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dimse_cmd c, back, zero;
    struct pacs_err err = { 0 };
    memset(&zero, 0, sizeof zero);
    int rc = dimse_cmd_decode(data, size, &c, &err);
    (void)dimse_command_name(c.command_field);
    (void)dimse_status_class_name(dimse_status_class(c.status));
    if (rc) {
        CHECK(err.msg[0] != '\0', "error without a message");
        CHECK(memcmp(&c, &zero, sizeof c) == 0, "struct not zeroed on error");
        return 0;
    }
    CHECK(c.present & DIMSE_HAS_COMMAND_FIELD, "accepted without CommandField");
    struct dynbuf once, twice;
    dynbuf_init(&once, 0);
    dynbuf_init(&twice, 0);
    CHECK(dimse_cmd_encode(&c, &once, &err) == 0, "encode failed: %s", err.msg);
    CHECK(once.len <= size + 12 + 8 * 20, "encoding much larger than the input");
    rc = dimse_cmd_decode(once.data, once.len, &back, &err);
    CHECK(rc == 0, "own encoding does not decode: %s", err.msg);
    CHECK(same_cmd(&c, &back), "decode(encode(x)) differs from x");
    CHECK(dimse_cmd_encode(&back, &twice, &err) == 0, "second encode failed: %s", err.msg);
    CHECK(once.len == twice.len && memcmp(once.data, twice.data, once.len) == 0,
          "encoding is not canonical");
    dynbuf_free(&once);
    dynbuf_free(&twice);
    return 0;
}
