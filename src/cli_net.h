/* cli_net.h - the network command-line tools: pacsd echo, store, find,
 * move and get, usable against any DICOM peer (as DCMTK's echoscu,
 * storescu, findscu, movescu and getscu are). docs/cli.md documents them.
 */
#ifndef PACS_CLI_NET_H
#define PACS_CLI_NET_H

#include <stdio.h>

/* True if cmd is one of the tools. */
int cli_net_is_tool(const char *cmd);
/* Runs tool cmd with its arguments (argv[0] is the first argument after
 * the command). Returns the process exit status: 0 success, 1 an operation
 * failed (a failure status, a file that could not be sent), 2 usage or
 * connection errors. */
int cli_net_main(const char *cmd, int argc, char **argv);
/* Usage lines for pacsd help. */
void cli_net_usage(FILE *to);

#endif
