/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "ops.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    enum op_kind kind;
    const char *name;
    int numbers; /* numeric arguments */
    bool text;   /* then a word */
} op_table[] = {
    {OP_WRITE, "write", 3, false},
    {OP_ZERO, "zero", 2, false},
    {OP_ZERO_UNMAP, "zero-unmap", 2, false},
    {OP_DISCARD, "discard", 2, false},
    {OP_RESIZE, "resize", 1, true},
    {OP_FLUSH, "flush", 0, false},
    {OP_REOPEN, "reopen", 0, false},
    {OP_VERIFY, "verify", 0, false},
    {OP_SNAPSHOT_CREATE, "snapshot-create", 0, true},
    {OP_SNAPSHOT_APPLY, "snapshot-apply", 0, true},
    {OP_SNAPSHOT_DELETE, "snapshot-delete", 0, true},
    {OP_SAVE, "save", 0, true},
};
#define OP_TABLE_SIZE (sizeof(op_table) / sizeof(op_table[0]))

bool op_parse_number(const char *word, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(word, &end, 0);
    if (errno || end == word || *end || word[0] == '-')
        return false;
    *out = v;
    return true;
}

int op_parse(const char *line, struct op *op)
{
    char copy[1024];
    if (strlen(line) >= sizeof(copy)) {
        fprintf(stderr, "operation too long: %.60s...\n", line);
        return -1;
    }
    strcpy(copy, line);
    char *save = NULL;
    char *word = strtok_r(copy, " \t\r\n", &save);
    if (!word)
        return -1;
    memset(op, 0, sizeof(*op));
    for (size_t i = 0; i < OP_TABLE_SIZE; i++) {
        if (strcmp(word, op_table[i].name) != 0)
            continue;
        op->kind = op_table[i].kind;
        uint64_t *slots[] = {&op->offset, &op->length, &op->seed};
        for (int n = 0; n < op_table[i].numbers; n++) {
            word = strtok_r(NULL, " \t\r\n", &save);
            if (!word || !op_parse_number(word, slots[n])) {
                fprintf(stderr, "'%s': argument %d is missing or not a number\n", line, n + 1);
                return -1;
            }
        }
        word = strtok_r(NULL, " \t\r\n", &save);
        if (op_table[i].text && word) {
            if (strlen(word) >= OP_NAME_MAX) {
                fprintf(stderr, "'%s': name too long\n", line);
                return -1;
            }
            strcpy(op->name, word);
            word = strtok_r(NULL, " \t\r\n", &save);
        } else if (op_table[i].text && op->kind != OP_RESIZE) {
            fprintf(stderr, "'%s': a name is required\n", line);
            return -1;
        }
        if (word) {
            fprintf(stderr, "'%s': unexpected '%s'\n", line, word);
            return -1;
        }
        return 0;
    }
    fprintf(stderr, "unknown operation '%s'\n", word);
    return -1;
}

void op_format(const struct op *op, char *buf, size_t size)
{
    const char *name = "?";
    for (size_t i = 0; i < OP_TABLE_SIZE; i++)
        if (op_table[i].kind == op->kind)
            name = op_table[i].name;
    switch (op->kind) {
    case OP_WRITE:
        snprintf(buf, size, "%s %" PRIu64 " %" PRIu64 " %" PRIu64, name, op->offset, op->length,
                 op->seed);
        break;
    case OP_ZERO:
    case OP_ZERO_UNMAP:
    case OP_DISCARD:
        snprintf(buf, size, "%s %" PRIu64 " %" PRIu64, name, op->offset, op->length);
        break;
    case OP_RESIZE:
        snprintf(buf, size, "%s %" PRIu64 "%s%s", name, op->offset, op->name[0] ? " " : "",
                 op->name);
        break;
    case OP_SNAPSHOT_CREATE:
    case OP_SNAPSHOT_APPLY:
    case OP_SNAPSHOT_DELETE:
    case OP_SAVE:
        snprintf(buf, size, "%s %s", name, op->name);
        break;
    default:
        snprintf(buf, size, "%s", name);
    }
}
