/* pacsd - command line entry point: the server, and tools over the codec
 * and the network layer. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "archive/archive.h"
#include "cli_net.h"
#include "dicom/dump.h"
#include "dicom/json.h"
#include "dicom/reader.h"
#include "dicom/writer.h"
#include "http/health.h"
#include "http/server.h"
#include "net/server.h"
#include "util/config.h"
#include "util/dynbuf.h"
#include "util/err.h"
#include "util/fdio.h"
#include "util/log.h"
#include "util/metrics.h"

static void usage(FILE *to)
{
    fprintf(to,
            "pacsd %s - DICOM server\n"
            "\n"
            "usage: pacsd COMMAND [OPTIONS] [ARGS]\n"
            "\n"
            "commands:\n"
            "  serve [--config FILE]                    run the server (DICOM on 4242, HTTP on 8042)\n"
            "  config [--config FILE]                   print the effective configuration\n"
            "  dump [--ts UID] [--max-value N] FILE...   print data sets in the manner of dcmdump\n"
            "  json [--ts UID] [--pretty] FILE...       print data sets as DICOM JSON (PS3.18 F.2)\n"
            "  convert [--ts SYNTAX] [--in-ts UID] IN OUT\n"
            "                                           rewrite a file in another transfer syntax:\n"
            "                                           implicit, explicit, big, deflated or a UID\n"
            "  version                                  print the version\n"
            "  help                                     print this text\n"
            "\n"
            "The configuration file may also be named by PACSD_CONFIG; every key can\n"
            "be set by an environment variable (docs/configuration.md).\n"
            "--ts UID (--in-ts for convert) reads files that have no meta group in that\n"
            "transfer syntax.\n"
            "Documentation: docs/ in the source tree.\n",
            PACSD_VERSION);
    cli_net_usage(to);
}

/* --config FILE, or PACSD_CONFIG; loads the configuration or says why not. */
static struct pacs_config *load_config(int argc, char **argv)
{
    const char *path = getenv("PACSD_CONFIG");
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc) {
            path = argv[++i];
        } else {
            fprintf(stderr, "pacsd: unexpected argument '%s'\n", argv[i]);
            return NULL;
        }
    }
    if (path && !*path)
        path = NULL;
    struct pacs_config *cfg = NULL;
    struct pacs_err err = {0};
    if (config_load(path, NULL, &cfg, &err)) {
        fprintf(stderr, "pacsd: configuration: %s\n", err.msg);
        return NULL;
    }
    return cfg;
}

static int cmd_config(int argc, char **argv)
{
    struct pacs_config *cfg = load_config(argc, argv);
    if (!cfg)
        return 2;
    struct dynbuf out;
    struct pacs_err err = {0};
    dynbuf_init(&out, 0);
    int rc = config_to_json(cfg, &out, &err);
    if (rc == 0)
        fwrite(out.data, 1, out.len, stdout);
    else
        fprintf(stderr, "pacsd: %s\n", err.msg);
    dynbuf_free(&out);
    config_free(cfg);
    return rc ? 1 : 0;
}

/* The DICOM listener's stop hook: readiness turns 503 at SIGTERM, while
 * associations drain, so load balancers stop sending work at once. */
static void on_stopping(void *ctx)
{
    (void)ctx;
    http_health_shutdown_begun();
}

static int cmd_serve(int argc, char **argv)
{
    struct pacs_config *cfg = load_config(argc, argv);
    if (!cfg)
        return 2;
    struct archive *ar = NULL;
    struct http_server *http = NULL;
    struct archive_startup st = {0};
    struct pacs_err err = {0};
    int rc;
    log_set_level(cfg->log.level);
    signal(SIGPIPE, SIG_IGN);
    log_info("pacsd %s starting, data in %s", PACSD_VERSION, cfg->data_dir);
    metrics_init(PACSD_VERSION);
    rc = archive_open(cfg, &ar, &st, &err);
    if (rc) {
        log_error("cannot open the archive: %s", err.msg);
        goto out;
    }
    if (st.temp_removed || st.orphans_removed)
        log_warn("recovered from an interrupted run: removed %u temporary and %u orphan "
                 "file(s)", st.temp_removed, st.orphans_removed);
    if (cfg->http.enabled && (rc = http_start(cfg, ar, &http, &err)) != 0) {
        log_error("%s", err.msg);
        archive_close(ar);
        goto out;
    }
    http_set_started(http);
    server_set_stop_hook(on_stopping, NULL);
    rc = server_run(cfg, ar, &err);
    if (rc)
        log_error("%s", err.msg);
    http_stop(http);
    archive_close(ar);
    if (rc == 0)
        log_info("stopped");
out:
    config_free(cfg);
    return rc ? 1 : 0;
}

/* A file mapped read-only; values read with copy_values=false borrow it. */
struct mapped {
    uint8_t *p;
    size_t len;
};

static int map_file(const char *path, struct mapped *m, struct pacs_err *err)
{
    m->p = NULL;
    m->len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return pacs_err_set(err, PACS_EIO, "cannot open: %s", strerror(errno));
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0) {
        rc = pacs_err_set(err, PACS_EIO, "cannot stat: %s", strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = pacs_err_set(err, PACS_EINVAL, "not a regular file");
        goto out;
    }
    if (st.st_size == 0) {
        rc = pacs_err_set(err, PACS_ETRUNC, "empty file");
        goto out;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
        rc = pacs_err_set(err, PACS_EIO, "cannot map: %s", strerror(errno));
        goto out;
    }
    m->p = p;
    m->len = (size_t)st.st_size;
out:
    close(fd);
    return rc;
}

static void unmap_file(struct mapped *m)
{
    if (m->p)
        munmap(m->p, m->len);
    m->p = NULL;
}

static int fd_write(void *ctx, const void *p, size_t n)
{
    return fd_write_all(*(int *)ctx, p, n);
}

/* Reads one file; on failure prints "pacsd: PATH: reason" on stderr. */
static int read_file(const char *path, const char *ts, struct mapped *m, struct dcm_file *f)
{
    struct pacs_err err = { 0 };
    int rc = map_file(path, m, &err);
    if (rc == 0) {
        struct dcm_read_opts o = { .ts_uid = ts };
        rc = dcm_read_part10(m->p, m->len, &o, f, &err);
        if (rc)
            unmap_file(m);
    }
    if (rc)
        fprintf(stderr, "pacsd: %s: %s\n", path, err.msg);
    return rc;
}

static const char *ts_arg(const char *name)
{
    if (!strcmp(name, "implicit"))
        return DCM_UID_IMPLICIT_LE;
    if (!strcmp(name, "explicit"))
        return DCM_UID_EXPLICIT_LE;
    if (!strcmp(name, "big"))
        return DCM_UID_EXPLICIT_BE;
    if (!strcmp(name, "deflated"))
        return DCM_UID_DEFLATED_LE;
    return name;
}

/* Formats one file that was read into `out`. */
typedef int (*format_fn)(const struct dcm_file *f, const void *opts, struct dynbuf *out,
                         struct pacs_err *err);

/* Reads each file, formats it and prints it; a file that fails gets one
 * line on stderr and the others are still done. Returns the exit status. */
static int print_files(int argc, char **argv, const char *ts, format_fn format, const void *opts)
{
    int failed = 0;
    struct dynbuf out;
    dynbuf_init(&out, 0);
    for (int i = 0; i < argc; i++) {
        struct mapped m;
        struct dcm_file f;
        struct pacs_err err = { 0 };
        if (read_file(argv[i], ts, &m, &f)) {
            failed = 1;
            continue;
        }
        dynbuf_reset(&out);
        int rc = format(&f, opts, &out, &err);
        if (rc == 0)
            rc = fd_write_all(STDOUT_FILENO, out.data, out.len);
        if (rc) {
            fprintf(stderr, "pacsd: %s: cannot print: %s\n", argv[i],
                    err.msg[0] ? err.msg : pacs_strerror(rc));
            failed = 1;
        }
        dcm_file_free(&f);
        unmap_file(&m);
    }
    dynbuf_free(&out);
    return failed;
}

static int format_dump(const struct dcm_file *f, const void *opts, struct dynbuf *out,
                       struct pacs_err *err)
{
    (void)err;
    return dcm_dump_file(f, opts, out);
}

static int format_json(const struct dcm_file *f, const void *opts, struct dynbuf *out,
                       struct pacs_err *err)
{
    int rc = dcm_json_write(f->ds, opts, out, err);
    return rc ? rc : dynbuf_putc(out, '\n');
}

static int cmd_dump(int argc, char **argv)
{
    const char *ts = NULL;
    struct dcm_dump_opts o = { 0 };
    int i = 0;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--ts") && i + 1 < argc) {
            ts = ts_arg(argv[++i]);
        } else if (!strcmp(argv[i], "--max-value") && i + 1 < argc) {
            char *end;
            unsigned long v = strtoul(argv[++i], &end, 10);
            if (*end || v == 0 || v > 1u << 20) {
                fprintf(stderr, "pacsd dump: bad --max-value '%s'\n", argv[i]);
                return 2;
            }
            o.max_value = (unsigned)v;
        } else {
            fprintf(stderr, "pacsd dump: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (i == argc) {
        fprintf(stderr, "pacsd dump: no file given\n");
        return 2;
    }
    return print_files(argc - i, argv + i, ts, format_dump, &o);
}

static int cmd_json(int argc, char **argv)
{
    const char *ts = NULL;
    struct dcm_json_opts o = { 0 };
    int i = 0;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--ts") && i + 1 < argc) {
            ts = ts_arg(argv[++i]);
        } else if (!strcmp(argv[i], "--pretty")) {
            o.pretty = true;
        } else {
            fprintf(stderr, "pacsd json: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (i == argc) {
        fprintf(stderr, "pacsd json: no file given\n");
        return 2;
    }
    return print_files(argc - i, argv + i, ts, format_json, &o);
}

static int cmd_convert(int argc, char **argv)
{
    const char *ts = DCM_UID_EXPLICIT_LE, *in_ts = NULL;
    int i = 0;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--ts") && i + 1 < argc) {
            ts = ts_arg(argv[++i]);
        } else if (!strcmp(argv[i], "--in-ts") && i + 1 < argc) {
            in_ts = ts_arg(argv[++i]);
        } else {
            fprintf(stderr, "pacsd convert: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (argc - i != 2) {
        fprintf(stderr, "pacsd convert: need IN and OUT\n");
        return 2;
    }
    const char *in = argv[i], *outp = argv[i + 1];
    struct mapped m;
    struct dcm_file f;
    if (read_file(in, in_ts, &m, &f))
        return 1;
    struct pacs_err err = { 0 };
    int rc = 0;
    /* Write beside the target and rename, so OUT is whole or absent. */
    char tmp[4096];
    int n = snprintf(tmp, sizeof tmp, "%s.tmp%ld", outp, (long)getpid());
    int fd = -1;
    if (n < 0 || (size_t)n >= sizeof tmp) {
        rc = pacs_err_set(&err, PACS_EINVAL, "output path too long");
        goto out;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = pacs_err_set(&err, PACS_EIO, "cannot create %s: %s", tmp, strerror(errno));
        goto out;
    }
    struct dcm_sink sink = { fd_write, &fd };
    struct dcm_write_opts wo = { .ts_uid = ts, .src_meta = f.meta };
    rc = dcm_write_part10(f.ds, &wo, &sink, &err);
    if (rc == 0 && fsync(fd) != 0)
        rc = pacs_err_set(&err, PACS_EIO, "cannot sync: %s", strerror(errno));
    if (close(fd) != 0 && rc == 0)
        rc = pacs_err_set(&err, PACS_EIO, "cannot close: %s", strerror(errno));
    fd = -1;
    if (rc == 0 && rename(tmp, outp) != 0)
        rc = pacs_err_set(&err, PACS_EIO, "cannot rename to %s: %s", outp, strerror(errno));
    if (rc)
        unlink(tmp);
out:
    if (rc)
        fprintf(stderr, "pacsd: %s: %s\n", in, err.msg);
    dcm_file_free(&f);
    unmap_file(&m);
    return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stdout);
        return 0;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "serve"))
        return cmd_serve(argc - 2, argv + 2);
    if (!strcmp(cmd, "config"))
        return cmd_config(argc - 2, argv + 2);
    if (cli_net_is_tool(cmd))
        return cli_net_main(cmd, argc - 2, argv + 2);
    if (!strcmp(cmd, "dump"))
        return cmd_dump(argc - 2, argv + 2);
    if (!strcmp(cmd, "json"))
        return cmd_json(argc - 2, argv + 2);
    if (!strcmp(cmd, "convert"))
        return cmd_convert(argc - 2, argv + 2);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("pacsd %s\n", PACSD_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "pacsd: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
