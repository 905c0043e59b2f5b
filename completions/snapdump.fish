# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_snapdump_global_optspecs
    string join \n v/verbose q/quiet h/help V/version
end

function __fish_snapdump_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_snapdump_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_snapdump_using_subcommand
    set -l cmd (__fish_snapdump_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c snapdump -n "__fish_snapdump_needs_command" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_needs_command" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_needs_command" -s h -l help -d 'Print help'
complete -c snapdump -n "__fish_snapdump_needs_command" -s V -l version -d 'Print version'
complete -c snapdump -n "__fish_snapdump_needs_command" -f -a "dump" -d 'Write a level-0..9 image stream of a source tree'
complete -c snapdump -n "__fish_snapdump_needs_command" -f -a "restore" -d 'Restore, extract, compare, browse or list image streams'
complete -c snapdump -n "__fish_snapdump_needs_command" -f -a "verify" -d 'Check every checksum of a stream without restoring it'
complete -c snapdump -n "__fish_snapdump_needs_command" -f -a "export-tar" -d 'Write a snapshot of a chain of streams as a POSIX tar stream'
complete -c snapdump -n "__fish_snapdump_needs_command" -f -a "coalesce" -d 'Merge consecutive streams of a chain into one (a synthetic full from a level 0 and increments)'
complete -c snapdump -n "__fish_snapdump_needs_command" -f -a "snapshots" -d 'List the snapshots recorded in the catalog'
complete -c snapdump -n "__fish_snapdump_needs_command" -f -a "history" -d 'Show every snapshot in which a file changed'
complete -c snapdump -n "__fish_snapdump_needs_command" -f -a "replicate" -d 'Bring a replica (volume or directory, local or over ssh) up to date'
complete -c snapdump -n "__fish_snapdump_needs_command" -f -a "pointer" -d 'Name snapshots of a source (set, ls, rm); replicate keeps `master`'
complete -c snapdump -n "__fish_snapdump_needs_command" -f -a "replicas" -d 'List (or forget) the replicas a source has served'
complete -c snapdump -n "__fish_snapdump_needs_command" -f -a "serve" -d 'The receiving end of replicate, speaking the protocol on stdin/stdout'
complete -c snapdump -n "__fish_snapdump_needs_command" -f -a "volume" -d 'Create, list, extract, export, check and manage volumes'
complete -c snapdump -n "__fish_snapdump_needs_command" -f -a "mirror" -d 'An incremental mirror: the base on tape, the blocks that differ from it on disk (create, add, status, reintegrate)'
complete -c snapdump -n "__fish_snapdump_needs_command" -f -a "policy" -d 'Check, plan, simulate or install a policy (man 5 snapdump-policy)'
complete -c snapdump -n "__fish_snapdump_needs_command" -f -a "run" -d 'Do what a policy says is due: dump, coalesce, prune'
complete -c snapdump -n "__fish_snapdump_needs_command" -f -a "track" -d 'Track changes as they happen, so increments need no walk (start, status, stop)'
complete -c snapdump -n "__fish_snapdump_needs_command" -f -a "completions" -d 'Print a shell completion script (bash, zsh, fish, elvish, powershell)'
complete -c snapdump -n "__fish_snapdump_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -l base -d 'Base snapshot id (default: the newest snapshot of a lower level)' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -l image -d 'From a volume: the plane expression to dump, e.g. \'S5+S4-S3\'' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -s f -d 'Output: a file, a device, or - for stdout (default: $TAPE)' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -s b -d 'On tape: KiB per data record (one record per write)' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -l exclude -d 'Leave out entries matching PATTERN (gitignore syntax; repeatable)' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -l exclude-from -d 'Read exclude patterns from FILE, one per line (# comments)' -r -F
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -l exclude-if-present -d 'Keep only NAME of a directory holding a file NAME (repeatable)' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -l honor-nodump -d 'Leave out entries flagged nodump (chattr +d) at this level and above (default 1, as dump -h; 10: never)' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -l tape-capacity -d 'Capacity of a virtual tape (e.g. 400M, 12T)' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -l volume-size -d 'Cut a dump to files into volumes of at most SIZE (e.g. 4G)' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -l new-volume -d 'Run CMD when the next volume is needed' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -l catalog -d 'Catalog directory (default: /var/lib/snapdump for root, else $XDG_STATE_HOME/snapdump)' -r -F
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -s z -l compress -d 'zstd level for the stream\'s records; 0 turns compression off' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -l json-file -d 'Write the JSON summary to FILE instead. FILE is checked before any work; if it still cannot be written afterwards (a full disk), the summary goes to stderr and the exit status is 1' -r -F
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -s 0 -d 'The dump level, -0 .. -9: 0 (the default) is a full image; N carries what changed since the newest snapshot of a lower level'
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -s 1
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -s 2
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -s 3
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -s 4
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -s 5
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -s 6
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -s 7
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -s 8
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -s 9
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -l append -d 'On tape: add the dump after the dumps already on it'
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -l resume -d 'Continue this source\'s interrupted dump (same level, -f and -z)'
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -l cross-mounts -d 'Enter file systems mounted below the source'
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -l exclude-caches -d 'Keep only CACHEDIR.TAG of a directory holding a valid one'
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -l rules-changed -d 'Replace the exclusion rules recorded for this source with the ones given (the increment carries what comes in or goes out)'
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -l no-wait -d 'Fail at once, instead of waiting, when another run holds the lock'
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -l no-tracker -d 'Walk the tree even when a change tracker runs (snapdump track)'
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -l verify-tracker -d 'Build the increment both from the change tracker and by walking the tree, and fail (writing nothing) unless they agree'
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -l json -d 'Print a JSON summary (on stderr when the stream goes to stdout)'
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand dump" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c snapdump -n "__fish_snapdump_using_subcommand restore" -s f -d 'Input: a file, a device, or - for stdin (default: $TAPE); repeat for a chain' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand restore" -l at -d 'Work on this snapshot of the chain (default the newest given)' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand restore" -l target -d 'Directory to restore into (default: the current directory)' -r -F
complete -c snapdump -n "__fish_snapdump_using_subcommand restore" -l volume -d 'With -r: apply the streams to this volume instead of a directory' -r -F
complete -c snapdump -n "__fish_snapdump_using_subcommand restore" -l mirror -d 'With -r, -x, -C or -t: the newest snapshot of this incremental mirror, whose base is the one -f names; the blocks that differ from the base come from the mirror. -r reads the base once, in order; -x and -C read of a base in a file only the records they need; -t reads only the mirror. See snapdump mirror' -r -F
complete -c snapdump -n "__fish_snapdump_using_subcommand restore" -l file-number -d 'On a tape: read the Nth dump (from 1), spacing over N-1 filemarks' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand restore" -l new-volume -d 'Run CMD when the next volume is needed' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand restore" -l json-file -d 'Write the JSON summary to FILE instead. FILE is checked before any work; if it still cannot be written afterwards (a full disk), the summary goes to stderr and the exit status is 1' -r -F
complete -c snapdump -n "__fish_snapdump_using_subcommand restore" -s r -d 'Restore the whole stream into the target (see DESCRIPTION)'
complete -c snapdump -n "__fish_snapdump_using_subcommand restore" -s t -d 'List the stream\'s entries (only the PATHs given, if any)'
complete -c snapdump -n "__fish_snapdump_using_subcommand restore" -s x -d 'Extract the given PATHs'
complete -c snapdump -n "__fish_snapdump_using_subcommand restore" -s C -d 'Compare the stream with the target tree'
complete -c snapdump -n "__fish_snapdump_using_subcommand restore" -s i -d 'Browse the stream in an interactive shell and extract what you mark'
complete -c snapdump -n "__fish_snapdump_using_subcommand restore" -l finish -d 'Remove the target\'s restore chain state (after the last increment)'
complete -c snapdump -n "__fish_snapdump_using_subcommand restore" -l force -d 'Restore into a non-empty target, replacing entries in the way'
complete -c snapdump -n "__fish_snapdump_using_subcommand restore" -l inplace -d 'With -r and an increment: finish it in place instead of building the new tree beside the target and swapping it in: only changed entries move, directories and unchanged files keep their inodes, no copies of changed files; a kill mid-finish leaves a mix of the two snapshots until the next restore finishes it'
complete -c snapdump -n "__fish_snapdump_using_subcommand restore" -l no-wait -d 'Fail at once, instead of waiting, when another run holds the lock'
complete -c snapdump -n "__fish_snapdump_using_subcommand restore" -l verify-digest -d 'Also recompute the stream\'s digest list (as verify does)'
complete -c snapdump -n "__fish_snapdump_using_subcommand restore" -l json -d 'Print a JSON summary (on stderr when the stream goes to stdout)'
complete -c snapdump -n "__fish_snapdump_using_subcommand restore" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand restore" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand restore" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c snapdump -n "__fish_snapdump_using_subcommand verify" -s f -d 'Input: a file, a device, or - for stdin (default: $TAPE); repeat for the volumes of a dump on tape' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand verify" -l file-number -d 'On a tape: read the Nth dump (from 1), spacing over N-1 filemarks' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand verify" -l new-volume -d 'Run CMD when the next volume is needed' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand verify" -l json-file -d 'Write the JSON summary to FILE instead. FILE is checked before any work; if it still cannot be written afterwards (a full disk), the summary goes to stderr and the exit status is 1' -r -F
complete -c snapdump -n "__fish_snapdump_using_subcommand verify" -l json -d 'Print a JSON summary (on stderr when the stream goes to stdout)'
complete -c snapdump -n "__fish_snapdump_using_subcommand verify" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand verify" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand verify" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c snapdump -n "__fish_snapdump_using_subcommand export-tar" -s f -d 'Input: a file, a device, or - for stdin (default: $TAPE); repeat for a chain (a level 0 and its increments, in any order)' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand export-tar" -l at -d 'Export this snapshot of the chain (default the newest given): its id, or the newest taken at or before a time (RFC 3339, UTC)' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand export-tar" -l file-number -d 'On a tape: read the Nth dump (from 1), spacing over N-1 filemarks' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand export-tar" -l new-volume -d 'Run CMD when the next volume is needed' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand export-tar" -l verify-digest -d 'Also recompute each stream\'s digest list (as verify does); the streams are then read whole'
complete -c snapdump -n "__fish_snapdump_using_subcommand export-tar" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand export-tar" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand export-tar" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c snapdump -n "__fish_snapdump_using_subcommand coalesce" -s f -d 'Input: a stream of the chain (a file, a device, a tape, or - for stdin once); at least two, in any order' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand coalesce" -s o -d 'Output: a file, a device, a tape (/dev/nstN), a virtual tape (*.tap), or - for stdout; repeat to name further volumes, as dump -f' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand coalesce" -s b -d 'On tape: KiB per data record (one record per write)' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand coalesce" -l tape-capacity -d 'Capacity of a virtual tape (e.g. 400M, 12T)' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand coalesce" -l volume-size -d 'Cut the output into volume files of at most SIZE (e.g. 4G)' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand coalesce" -s z -l compress -d 'zstd level for the output\'s records; 0 turns compression off' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand coalesce" -l max-waste -d 'A data record whose kept blocks stay as they are is copied whole, not compressed again, its dropped blocks left in as gap bytes, when these are at most PERCENT of its data (0: only records that keep every block are copied)' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand coalesce" -l file-number -d 'On a tape: read the Nth dump (from 1), spacing over N-1 filemarks' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand coalesce" -l new-volume -d 'Run CMD when the next volume is needed' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand coalesce" -l json-file -d 'Write the JSON summary to FILE instead. FILE is checked before any work; if it still cannot be written afterwards (a full disk), the summary goes to stderr and the exit status is 1' -r -F
complete -c snapdump -n "__fish_snapdump_using_subcommand coalesce" -l append -d 'On tape: add the stream after the dumps already on it'
complete -c snapdump -n "__fish_snapdump_using_subcommand coalesce" -l verify-digest -d 'Also recompute each input\'s digest list (as verify does)'
complete -c snapdump -n "__fish_snapdump_using_subcommand coalesce" -l recompress -d 'Compress every record again at -z, copying none: the smallest output, at the cost of the time a fresh dump spends compressing'
complete -c snapdump -n "__fish_snapdump_using_subcommand coalesce" -l json -d 'Print a JSON summary (on stderr when the stream goes to stdout)'
complete -c snapdump -n "__fish_snapdump_using_subcommand coalesce" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand coalesce" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand coalesce" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c snapdump -n "__fish_snapdump_using_subcommand snapshots" -l catalog -d 'Catalog directory (default: /var/lib/snapdump for root, else $XDG_STATE_HOME/snapdump)' -r -F
complete -c snapdump -n "__fish_snapdump_using_subcommand snapshots" -l json -d 'Print JSON'
complete -c snapdump -n "__fish_snapdump_using_subcommand snapshots" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand snapshots" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand snapshots" -s h -l help -d 'Print help'
complete -c snapdump -n "__fish_snapdump_using_subcommand history" -s f -d 'Streams to read (repeat, any order); without -f, the streams the catalog recorded for the source holding PATH' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand history" -l catalog -d 'Catalog directory (default: /var/lib/snapdump for root, else $XDG_STATE_HOME/snapdump)' -r -F
complete -c snapdump -n "__fish_snapdump_using_subcommand history" -l mirror -d 'The history up to the newest snapshot of this incremental mirror, whose base is the one -f names: the base\'s snapshot, then the mirror\'s newest (the snapshots it absorbed in between are not kept). Reads the base\'s metadata only' -r -F
complete -c snapdump -n "__fish_snapdump_using_subcommand history" -l no-wait -d 'Fail at once, instead of waiting, when another run holds the lock'
complete -c snapdump -n "__fish_snapdump_using_subcommand history" -l json -d 'Print JSON'
complete -c snapdump -n "__fish_snapdump_using_subcommand history" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand history" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand history" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c snapdump -n "__fish_snapdump_using_subcommand replicate" -l catalog -d 'Catalog directory (default: /var/lib/snapdump for root, else $XDG_STATE_HOME/snapdump)' -r -F
complete -c snapdump -n "__fish_snapdump_using_subcommand replicate" -l rsh -d 'Remote shell for HOST:PATH destinations, split on spaces (as rsync\'s -e)' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand replicate" -l remote-snapdump -d 'The snapdump binary on the remote host' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand replicate" -l snapshot -d 'For a volume source: the snapshot to send, a pointer name or what PATH@SNAPSHOT takes (default: its newest)' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand replicate" -s z -l compress -d 'zstd level of the stream (0: none)' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand replicate" -l full -d 'Send a full copy whatever the destination holds (resolves a conflict)'
complete -c snapdump -n "__fish_snapdump_using_subcommand replicate" -l inplace -d 'A directory destination finishes increments in place instead of swapping a new tree in (see restore --inplace)'
complete -c snapdump -n "__fish_snapdump_using_subcommand replicate" -l cross-mounts -d 'A tree source: enter file systems mounted below it (see dump --cross-mounts)'
complete -c snapdump -n "__fish_snapdump_using_subcommand replicate" -l json -d 'Print a JSON summary: decision, reason, base, top, stream_bytes, bytes_sent, bytes_resumed, wire_bytes_sent, wire_bytes_received, elapsed_seconds'
complete -c snapdump -n "__fish_snapdump_using_subcommand replicate" -l no-wait -d 'Fail at once, instead of waiting, when another run holds the lock'
complete -c snapdump -n "__fish_snapdump_using_subcommand replicate" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand replicate" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand replicate" -s h -l help -d 'Print help'
complete -c snapdump -n "__fish_snapdump_using_subcommand pointer; and not __fish_seen_subcommand_from set ls rm help" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand pointer; and not __fish_seen_subcommand_from set ls rm help" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand pointer; and not __fish_seen_subcommand_from set ls rm help" -s h -l help -d 'Print help'
complete -c snapdump -n "__fish_snapdump_using_subcommand pointer; and not __fish_seen_subcommand_from set ls rm help" -f -a "set" -d 'Name a snapshot (a catalog id for a tree, PATH@SNAPSHOT\'s selector for a volume)'
complete -c snapdump -n "__fish_snapdump_using_subcommand pointer; and not __fish_seen_subcommand_from set ls rm help" -f -a "ls" -d 'List the pointers (master is kept by replicate)'
complete -c snapdump -n "__fish_snapdump_using_subcommand pointer; and not __fish_seen_subcommand_from set ls rm help" -f -a "rm" -d 'Remove a pointer'
complete -c snapdump -n "__fish_snapdump_using_subcommand pointer; and not __fish_seen_subcommand_from set ls rm help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c snapdump -n "__fish_snapdump_using_subcommand pointer; and __fish_seen_subcommand_from set" -l catalog -d 'Catalog directory (default: /var/lib/snapdump for root, else $XDG_STATE_HOME/snapdump)' -r -F
complete -c snapdump -n "__fish_snapdump_using_subcommand pointer; and __fish_seen_subcommand_from set" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand pointer; and __fish_seen_subcommand_from set" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand pointer; and __fish_seen_subcommand_from set" -s h -l help -d 'Print help'
complete -c snapdump -n "__fish_snapdump_using_subcommand pointer; and __fish_seen_subcommand_from ls" -l catalog -d 'Catalog directory (default: /var/lib/snapdump for root, else $XDG_STATE_HOME/snapdump)' -r -F
complete -c snapdump -n "__fish_snapdump_using_subcommand pointer; and __fish_seen_subcommand_from ls" -l json -d 'Print JSON: name, snapshot'
complete -c snapdump -n "__fish_snapdump_using_subcommand pointer; and __fish_seen_subcommand_from ls" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand pointer; and __fish_seen_subcommand_from ls" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand pointer; and __fish_seen_subcommand_from ls" -s h -l help -d 'Print help'
complete -c snapdump -n "__fish_snapdump_using_subcommand pointer; and __fish_seen_subcommand_from rm" -l catalog -d 'Catalog directory (default: /var/lib/snapdump for root, else $XDG_STATE_HOME/snapdump)' -r -F
complete -c snapdump -n "__fish_snapdump_using_subcommand pointer; and __fish_seen_subcommand_from rm" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand pointer; and __fish_seen_subcommand_from rm" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand pointer; and __fish_seen_subcommand_from rm" -s h -l help -d 'Print help'
complete -c snapdump -n "__fish_snapdump_using_subcommand pointer; and __fish_seen_subcommand_from help" -f -a "set" -d 'Name a snapshot (a catalog id for a tree, PATH@SNAPSHOT\'s selector for a volume)'
complete -c snapdump -n "__fish_snapdump_using_subcommand pointer; and __fish_seen_subcommand_from help" -f -a "ls" -d 'List the pointers (master is kept by replicate)'
complete -c snapdump -n "__fish_snapdump_using_subcommand pointer; and __fish_seen_subcommand_from help" -f -a "rm" -d 'Remove a pointer'
complete -c snapdump -n "__fish_snapdump_using_subcommand pointer; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c snapdump -n "__fish_snapdump_using_subcommand replicas" -l catalog -d 'Catalog directory (default: /var/lib/snapdump for root, else $XDG_STATE_HOME/snapdump)' -r -F
complete -c snapdump -n "__fish_snapdump_using_subcommand replicas" -l forget -d 'Forget this replica (its id, or a unique prefix of it)' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand replicas" -l json -d 'Print JSON: replica_id, kind, destination, newest (its newest master), updated'
complete -c snapdump -n "__fish_snapdump_using_subcommand replicas" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand replicas" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand replicas" -s h -l help -d 'Print help'
complete -c snapdump -n "__fish_snapdump_using_subcommand serve" -l volume -d 'Receive into this volume (created if missing)' -r -F
complete -c snapdump -n "__fish_snapdump_using_subcommand serve" -l target -d 'Receive into this restore target directory' -r -F
complete -c snapdump -n "__fish_snapdump_using_subcommand serve" -l inplace -d 'Into a target: finish increments in place (see restore --inplace)'
complete -c snapdump -n "__fish_snapdump_using_subcommand serve" -l no-wait -d 'Fail at once, instead of waiting, when another run holds the lock'
complete -c snapdump -n "__fish_snapdump_using_subcommand serve" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand serve" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand serve" -s h -l help -d 'Print help'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and not __fish_seen_subcommand_from create ls extract export-tar check snapshots delete-snapshot shadow help" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and not __fish_seen_subcommand_from create ls extract export-tar check snapshots delete-snapshot shadow help" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and not __fish_seen_subcommand_from create ls extract export-tar check snapshots delete-snapshot shadow help" -s h -l help -d 'Print help'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and not __fish_seen_subcommand_from create ls extract export-tar check snapshots delete-snapshot shadow help" -f -a "create" -d 'Create an empty volume file'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and not __fish_seen_subcommand_from create ls extract export-tar check snapshots delete-snapshot shadow help" -f -a "ls" -d 'List a snapshot\'s entries (PATH@SNAPSHOT; default the newest)'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and not __fish_seen_subcommand_from create ls extract export-tar check snapshots delete-snapshot shadow help" -f -a "extract" -d 'Extract a snapshot, or some of its paths, into a directory'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and not __fish_seen_subcommand_from create ls extract export-tar check snapshots delete-snapshot shadow help" -f -a "export-tar" -d 'Write a snapshot as a POSIX tar stream to stdout'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and not __fish_seen_subcommand_from create ls extract export-tar check snapshots delete-snapshot shadow help" -f -a "check" -d 'Check every checksum, pointer and bit plane of a volume'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and not __fish_seen_subcommand_from create ls extract export-tar check snapshots delete-snapshot shadow help" -f -a "snapshots" -d 'List the snapshots a volume holds'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and not __fish_seen_subcommand_from create ls extract export-tar check snapshots delete-snapshot shadow help" -f -a "delete-snapshot" -d 'Remove a snapshot; blocks nothing else uses are freed'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and not __fish_seen_subcommand_from create ls extract export-tar check snapshots delete-snapshot shadow help" -f -a "shadow" -d 'Make a snapshot a shadow: its blocks become reusable'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and not __fish_seen_subcommand_from create ls extract export-tar check snapshots delete-snapshot shadow help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from create" -l block-size -d 'Block size in bytes (the streams received must use it)' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from create" -l size -d 'Largest size the volume may grow to (e.g. 10G); default no limit' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from create" -l compact -d 'Pack blocks at the lowest free VBNs instead of their source VBNs'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from create" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from create" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from ls" -l json-file -d 'Write the JSON summary to FILE instead. FILE is checked before any work; if it still cannot be written afterwards (a full disk), the summary goes to stderr and the exit status is 1' -r -F
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from ls" -l json -d 'Print a JSON summary (on stderr when the stream goes to stdout)'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from ls" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from ls" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from ls" -s h -l help -d 'Print help'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from extract" -l json-file -d 'Write the JSON summary to FILE instead. FILE is checked before any work; if it still cannot be written afterwards (a full disk), the summary goes to stderr and the exit status is 1' -r -F
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from extract" -l force -d 'Replace existing entries in the way'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from extract" -l json -d 'Print a JSON summary (on stderr when the stream goes to stdout)'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from extract" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from extract" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from extract" -s h -l help -d 'Print help'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from export-tar" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from export-tar" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from export-tar" -s h -l help -d 'Print help'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from check" -l json-file -d 'Write the JSON summary to FILE instead. FILE is checked before any work; if it still cannot be written afterwards (a full disk), the summary goes to stderr and the exit status is 1' -r -F
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from check" -l json -d 'Print a JSON summary (on stderr when the stream goes to stdout)'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from check" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from check" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from check" -s h -l help -d 'Print help'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from snapshots" -l json-file -d 'Write the JSON summary to FILE instead. FILE is checked before any work; if it still cannot be written afterwards (a full disk), the summary goes to stderr and the exit status is 1' -r -F
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from snapshots" -l json -d 'Print a JSON summary (on stderr when the stream goes to stdout)'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from snapshots" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from snapshots" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from snapshots" -s h -l help -d 'Print help'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from delete-snapshot" -l catalog -d 'Catalog directory (default: /var/lib/snapdump for root, else $XDG_STATE_HOME/snapdump)' -r -F
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from delete-snapshot" -l no-wait -d 'Fail at once, instead of waiting, when another run holds the lock'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from delete-snapshot" -l force -d 'Go ahead even if the snapshot is the newest master of a replica this volume feeds (its next replicate is then a full copy)'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from delete-snapshot" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from delete-snapshot" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from delete-snapshot" -s h -l help -d 'Print help'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from shadow" -l catalog -d 'Catalog directory (default: /var/lib/snapdump for root, else $XDG_STATE_HOME/snapdump)' -r -F
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from shadow" -l no-wait -d 'Fail at once, instead of waiting, when another run holds the lock'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from shadow" -l force -d 'Go ahead even if the snapshot is the newest master of a replica this volume feeds (its next replicate is then a full copy)'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from shadow" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from shadow" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from shadow" -s h -l help -d 'Print help'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from help" -f -a "create" -d 'Create an empty volume file'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from help" -f -a "ls" -d 'List a snapshot\'s entries (PATH@SNAPSHOT; default the newest)'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from help" -f -a "extract" -d 'Extract a snapshot, or some of its paths, into a directory'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from help" -f -a "export-tar" -d 'Write a snapshot as a POSIX tar stream to stdout'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from help" -f -a "check" -d 'Check every checksum, pointer and bit plane of a volume'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from help" -f -a "snapshots" -d 'List the snapshots a volume holds'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from help" -f -a "delete-snapshot" -d 'Remove a snapshot; blocks nothing else uses are freed'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from help" -f -a "shadow" -d 'Make a snapshot a shadow: its blocks become reusable'
complete -c snapdump -n "__fish_snapdump_using_subcommand volume; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and not __fish_seen_subcommand_from create add status reintegrate help" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and not __fish_seen_subcommand_from create add status reintegrate help" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and not __fish_seen_subcommand_from create add status reintegrate help" -s h -l help -d 'Print help'
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and not __fish_seen_subcommand_from create add status reintegrate help" -f -a "create" -d 'Make a mirror whose base is the full image on MEDIUM (not copied)'
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and not __fish_seen_subcommand_from create add status reintegrate help" -f -a "add" -d 'Add increments: the blocks they carry enter the mirror, the blocks they free leave it; one atomic commit each'
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and not __fish_seen_subcommand_from create add status reintegrate help" -f -a "status" -d 'Base, newest snapshot, blocks held and their size against the base'
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and not __fish_seen_subcommand_from create add status reintegrate help" -f -a "reintegrate" -d 'Write the newest snapshot as a synthetic full (base + mirror)'
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and not __fish_seen_subcommand_from create add status reintegrate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from create" -l base -d 'The base: a level 0 or synthetic full on a tape, virtual tape, file or device (only its front is read)' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from create" -l file-number -d 'On a tape: read the Nth dump (from 1), spacing over N-1 filemarks' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from create" -l new-volume -d 'Run CMD when the next volume is needed' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from create" -l json-file -d 'Write the JSON summary to FILE instead. FILE is checked before any work; if it still cannot be written afterwards (a full disk), the summary goes to stderr and the exit status is 1' -r -F
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from create" -l json -d 'Print a JSON summary (on stderr when the stream goes to stdout)'
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from create" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from create" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from add" -s f -d 'An increment on the mirror\'s newest snapshot; repeat, in order' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from add" -l file-number -d 'On a tape: read the Nth dump (from 1), spacing over N-1 filemarks' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from add" -l new-volume -d 'Run CMD when the next volume is needed' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from add" -l json-file -d 'Write the JSON summary to FILE instead. FILE is checked before any work; if it still cannot be written afterwards (a full disk), the summary goes to stderr and the exit status is 1' -r -F
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from add" -l no-wait -d 'Fail at once, instead of waiting, when another run holds the lock'
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from add" -l json -d 'Print a JSON summary (on stderr when the stream goes to stdout)'
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from add" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from add" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from status" -l json-file -d 'Write the JSON summary to FILE instead. FILE is checked before any work; if it still cannot be written afterwards (a full disk), the summary goes to stderr and the exit status is 1' -r -F
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from status" -l json -d 'Print a JSON summary (on stderr when the stream goes to stdout)'
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from status" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from status" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help'
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from reintegrate" -l base -d 'The mirror\'s base, read once in order' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from reintegrate" -s o -d 'Output: a file, device, tape, virtual tape, or - (as dump -f)' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from reintegrate" -s z -l compress -d 'zstd level for the output\'s records; 0 turns compression off' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from reintegrate" -l file-number -d 'On a tape: read the Nth dump (from 1), spacing over N-1 filemarks' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from reintegrate" -l new-volume -d 'Run CMD when the next volume is needed' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from reintegrate" -l no-wait -d 'Fail at once, instead of waiting, when another run holds the lock'
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from reintegrate" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from reintegrate" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from reintegrate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from help" -f -a "create" -d 'Make a mirror whose base is the full image on MEDIUM (not copied)'
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from help" -f -a "add" -d 'Add increments: the blocks they carry enter the mirror, the blocks they free leave it; one atomic commit each'
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from help" -f -a "status" -d 'Base, newest snapshot, blocks held and their size against the base'
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from help" -f -a "reintegrate" -d 'Write the newest snapshot as a synthetic full (base + mirror)'
complete -c snapdump -n "__fish_snapdump_using_subcommand mirror; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and not __fish_seen_subcommand_from check plan simulate install help" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and not __fish_seen_subcommand_from check plan simulate install help" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and not __fish_seen_subcommand_from check plan simulate install help" -s h -l help -d 'Print help'
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and not __fish_seen_subcommand_from check plan simulate install help" -f -a "check" -d 'Read and check a policy file; every mistake is named with its line'
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and not __fish_seen_subcommand_from check plan simulate install help" -f -a "plan" -d 'What is due now (or at --at) and why: the dump and its level, a synthetic full, and every snapshot kept or pruned with the rule that decided it. Touches nothing'
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and not __fish_seen_subcommand_from check plan simulate install help" -f -a "simulate" -d 'Play the policy forward day by day on a model of the catalog (the levels dumped, synthetic fulls, streams kept, space, restore chain lengths), touching nothing'
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and not __fish_seen_subcommand_from check plan simulate install help" -f -a "install" -d 'Write a systemd service and timer, or a cron.d file, that runs the policy every few minutes (the plan decides what is due)'
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and not __fish_seen_subcommand_from check plan simulate install help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and __fish_seen_subcommand_from check" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and __fish_seen_subcommand_from check" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and __fish_seen_subcommand_from check" -s h -l help -d 'Print help'
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and __fish_seen_subcommand_from plan" -l at -d 'Plan for this time instead of now (RFC 3339, UTC)' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and __fish_seen_subcommand_from plan" -l explain -d 'Also list every snapshot with the rules that keep it'
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and __fish_seen_subcommand_from plan" -l json -d 'Print the plan as JSON'
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and __fish_seen_subcommand_from plan" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and __fish_seen_subcommand_from plan" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and __fish_seen_subcommand_from plan" -s h -l help -d 'Print help'
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and __fish_seen_subcommand_from simulate" -l days -d 'Days to simulate' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and __fish_seen_subcommand_from simulate" -l from -d 'Start at this time instead of now (RFC 3339, UTC)' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and __fish_seen_subcommand_from simulate" -l full-bytes -d 'Bytes of a full image in the model (e.g. 40G); default the newest full the catalog holds, else 1G' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and __fish_seen_subcommand_from simulate" -l daily-change -d 'Share of the full an increment carries per day, in per cent' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and __fish_seen_subcommand_from simulate" -l fresh -d 'Start from an empty catalog instead of the source\'s'
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and __fish_seen_subcommand_from simulate" -l json -d 'Print JSON'
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and __fish_seen_subcommand_from simulate" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and __fish_seen_subcommand_from simulate" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and __fish_seen_subcommand_from simulate" -s h -l help -d 'Print help'
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and __fish_seen_subcommand_from install" -l dir -d 'Where to write (default /etc/systemd/system or /etc/cron.d)' -r -F
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and __fish_seen_subcommand_from install" -l every-minutes -d 'Minutes between runs' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and __fish_seen_subcommand_from install" -l systemd -d 'A systemd service and timer (Persistent=true)'
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and __fish_seen_subcommand_from install" -l cron -d 'A cron.d file'
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and __fish_seen_subcommand_from install" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and __fish_seen_subcommand_from install" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and __fish_seen_subcommand_from install" -s h -l help -d 'Print help'
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and __fish_seen_subcommand_from help" -f -a "check" -d 'Read and check a policy file; every mistake is named with its line'
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and __fish_seen_subcommand_from help" -f -a "plan" -d 'What is due now (or at --at) and why: the dump and its level, a synthetic full, and every snapshot kept or pruned with the rule that decided it. Touches nothing'
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and __fish_seen_subcommand_from help" -f -a "simulate" -d 'Play the policy forward day by day on a model of the catalog (the levels dumped, synthetic fulls, streams kept, space, restore chain lengths), touching nothing'
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and __fish_seen_subcommand_from help" -f -a "install" -d 'Write a systemd service and timer, or a cron.d file, that runs the policy every few minutes (the plan decides what is due)'
complete -c snapdump -n "__fish_snapdump_using_subcommand policy; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c snapdump -n "__fish_snapdump_using_subcommand run" -l at -d 'Act as if the clock said TIME (RFC 3339, UTC): plan for it and give the snapshots it takes that time. For testing a policy (with its own scratch catalog and streams directory: snapshots stamped ahead of the real clock make the next real run a level 0 that prunes nothing), or catching up a run at the time it was due' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand run" -l json-file -d 'Write the JSON summary to FILE instead. FILE is checked before any work; if it still cannot be written afterwards (a full disk), the summary goes to stderr and the exit status is 1' -r -F
complete -c snapdump -n "__fish_snapdump_using_subcommand run" -l allow-empty -d 'Dump the source even when it is empty while its newest snapshot was not (by default such a run dumps nothing and warns: an unmounted file system looks like that)'
complete -c snapdump -n "__fish_snapdump_using_subcommand run" -l no-wait -d 'Fail at once, instead of waiting, when another run holds the lock'
complete -c snapdump -n "__fish_snapdump_using_subcommand run" -l json -d 'Print a JSON summary (on stderr when the stream goes to stdout)'
complete -c snapdump -n "__fish_snapdump_using_subcommand run" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand run" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand run" -s h -l help -d 'Print help'
complete -c snapdump -n "__fish_snapdump_using_subcommand track; and not __fish_seen_subcommand_from start status stop help" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand track; and not __fish_seen_subcommand_from start status stop help" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand track; and not __fish_seen_subcommand_from start status stop help" -s h -l help -d 'Print help'
complete -c snapdump -n "__fish_snapdump_using_subcommand track; and not __fish_seen_subcommand_from start status stop help" -f -a "start" -d 'Start tracking changes of a source (a daemon; one per source and catalog)'
complete -c snapdump -n "__fish_snapdump_using_subcommand track; and not __fish_seen_subcommand_from start status stop help" -f -a "status" -d 'Show what the trackers of a catalog have seen'
complete -c snapdump -n "__fish_snapdump_using_subcommand track; and not __fish_seen_subcommand_from start status stop help" -f -a "stop" -d 'Stop a source\'s tracker'
complete -c snapdump -n "__fish_snapdump_using_subcommand track; and not __fish_seen_subcommand_from start status stop help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c snapdump -n "__fish_snapdump_using_subcommand track; and __fish_seen_subcommand_from start" -l max-ranges -d 'Entries each of the two page maps holds before the tracker reports itself full (and the next increment walks the tree); an entry is a range of pages, or a bitmap of 64' -r
complete -c snapdump -n "__fish_snapdump_using_subcommand track; and __fish_seen_subcommand_from start" -l catalog -d 'Catalog directory (default: /var/lib/snapdump for root, else $XDG_STATE_HOME/snapdump)' -r -F
complete -c snapdump -n "__fish_snapdump_using_subcommand track; and __fish_seen_subcommand_from start" -l foreground -d 'Stay in the foreground (for systemd\'s Type=simple); logs go to stderr'
complete -c snapdump -n "__fish_snapdump_using_subcommand track; and __fish_seen_subcommand_from start" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand track; and __fish_seen_subcommand_from start" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand track; and __fish_seen_subcommand_from start" -s h -l help -d 'Print help'
complete -c snapdump -n "__fish_snapdump_using_subcommand track; and __fish_seen_subcommand_from status" -l catalog -d 'Catalog directory (default: /var/lib/snapdump for root, else $XDG_STATE_HOME/snapdump)' -r -F
complete -c snapdump -n "__fish_snapdump_using_subcommand track; and __fish_seen_subcommand_from status" -l json -d 'Print JSON'
complete -c snapdump -n "__fish_snapdump_using_subcommand track; and __fish_seen_subcommand_from status" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand track; and __fish_seen_subcommand_from status" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand track; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help'
complete -c snapdump -n "__fish_snapdump_using_subcommand track; and __fish_seen_subcommand_from stop" -l catalog -d 'Catalog directory (default: /var/lib/snapdump for root, else $XDG_STATE_HOME/snapdump)' -r -F
complete -c snapdump -n "__fish_snapdump_using_subcommand track; and __fish_seen_subcommand_from stop" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand track; and __fish_seen_subcommand_from stop" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand track; and __fish_seen_subcommand_from stop" -s h -l help -d 'Print help'
complete -c snapdump -n "__fish_snapdump_using_subcommand track; and __fish_seen_subcommand_from help" -f -a "start" -d 'Start tracking changes of a source (a daemon; one per source and catalog)'
complete -c snapdump -n "__fish_snapdump_using_subcommand track; and __fish_seen_subcommand_from help" -f -a "status" -d 'Show what the trackers of a catalog have seen'
complete -c snapdump -n "__fish_snapdump_using_subcommand track; and __fish_seen_subcommand_from help" -f -a "stop" -d 'Stop a source\'s tracker'
complete -c snapdump -n "__fish_snapdump_using_subcommand track; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c snapdump -n "__fish_snapdump_using_subcommand completions" -s v -l verbose -d 'List each entry dumped or restored on stderr, as tar -v does'
complete -c snapdump -n "__fish_snapdump_using_subcommand completions" -s q -l quiet -d 'Print no notes (what was done differently on purpose, such as a mount point not entered); warnings and errors still are'
complete -c snapdump -n "__fish_snapdump_using_subcommand completions" -s h -l help -d 'Print help'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and not __fish_seen_subcommand_from dump restore verify export-tar coalesce snapshots history replicate pointer replicas serve volume mirror policy run track completions help" -f -a "dump" -d 'Write a level-0..9 image stream of a source tree'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and not __fish_seen_subcommand_from dump restore verify export-tar coalesce snapshots history replicate pointer replicas serve volume mirror policy run track completions help" -f -a "restore" -d 'Restore, extract, compare, browse or list image streams'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and not __fish_seen_subcommand_from dump restore verify export-tar coalesce snapshots history replicate pointer replicas serve volume mirror policy run track completions help" -f -a "verify" -d 'Check every checksum of a stream without restoring it'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and not __fish_seen_subcommand_from dump restore verify export-tar coalesce snapshots history replicate pointer replicas serve volume mirror policy run track completions help" -f -a "export-tar" -d 'Write a snapshot of a chain of streams as a POSIX tar stream'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and not __fish_seen_subcommand_from dump restore verify export-tar coalesce snapshots history replicate pointer replicas serve volume mirror policy run track completions help" -f -a "coalesce" -d 'Merge consecutive streams of a chain into one (a synthetic full from a level 0 and increments)'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and not __fish_seen_subcommand_from dump restore verify export-tar coalesce snapshots history replicate pointer replicas serve volume mirror policy run track completions help" -f -a "snapshots" -d 'List the snapshots recorded in the catalog'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and not __fish_seen_subcommand_from dump restore verify export-tar coalesce snapshots history replicate pointer replicas serve volume mirror policy run track completions help" -f -a "history" -d 'Show every snapshot in which a file changed'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and not __fish_seen_subcommand_from dump restore verify export-tar coalesce snapshots history replicate pointer replicas serve volume mirror policy run track completions help" -f -a "replicate" -d 'Bring a replica (volume or directory, local or over ssh) up to date'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and not __fish_seen_subcommand_from dump restore verify export-tar coalesce snapshots history replicate pointer replicas serve volume mirror policy run track completions help" -f -a "pointer" -d 'Name snapshots of a source (set, ls, rm); replicate keeps `master`'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and not __fish_seen_subcommand_from dump restore verify export-tar coalesce snapshots history replicate pointer replicas serve volume mirror policy run track completions help" -f -a "replicas" -d 'List (or forget) the replicas a source has served'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and not __fish_seen_subcommand_from dump restore verify export-tar coalesce snapshots history replicate pointer replicas serve volume mirror policy run track completions help" -f -a "serve" -d 'The receiving end of replicate, speaking the protocol on stdin/stdout'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and not __fish_seen_subcommand_from dump restore verify export-tar coalesce snapshots history replicate pointer replicas serve volume mirror policy run track completions help" -f -a "volume" -d 'Create, list, extract, export, check and manage volumes'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and not __fish_seen_subcommand_from dump restore verify export-tar coalesce snapshots history replicate pointer replicas serve volume mirror policy run track completions help" -f -a "mirror" -d 'An incremental mirror: the base on tape, the blocks that differ from it on disk (create, add, status, reintegrate)'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and not __fish_seen_subcommand_from dump restore verify export-tar coalesce snapshots history replicate pointer replicas serve volume mirror policy run track completions help" -f -a "policy" -d 'Check, plan, simulate or install a policy (man 5 snapdump-policy)'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and not __fish_seen_subcommand_from dump restore verify export-tar coalesce snapshots history replicate pointer replicas serve volume mirror policy run track completions help" -f -a "run" -d 'Do what a policy says is due: dump, coalesce, prune'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and not __fish_seen_subcommand_from dump restore verify export-tar coalesce snapshots history replicate pointer replicas serve volume mirror policy run track completions help" -f -a "track" -d 'Track changes as they happen, so increments need no walk (start, status, stop)'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and not __fish_seen_subcommand_from dump restore verify export-tar coalesce snapshots history replicate pointer replicas serve volume mirror policy run track completions help" -f -a "completions" -d 'Print a shell completion script (bash, zsh, fish, elvish, powershell)'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and not __fish_seen_subcommand_from dump restore verify export-tar coalesce snapshots history replicate pointer replicas serve volume mirror policy run track completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and __fish_seen_subcommand_from pointer" -f -a "set" -d 'Name a snapshot (a catalog id for a tree, PATH@SNAPSHOT\'s selector for a volume)'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and __fish_seen_subcommand_from pointer" -f -a "ls" -d 'List the pointers (master is kept by replicate)'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and __fish_seen_subcommand_from pointer" -f -a "rm" -d 'Remove a pointer'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and __fish_seen_subcommand_from volume" -f -a "create" -d 'Create an empty volume file'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and __fish_seen_subcommand_from volume" -f -a "ls" -d 'List a snapshot\'s entries (PATH@SNAPSHOT; default the newest)'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and __fish_seen_subcommand_from volume" -f -a "extract" -d 'Extract a snapshot, or some of its paths, into a directory'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and __fish_seen_subcommand_from volume" -f -a "export-tar" -d 'Write a snapshot as a POSIX tar stream to stdout'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and __fish_seen_subcommand_from volume" -f -a "check" -d 'Check every checksum, pointer and bit plane of a volume'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and __fish_seen_subcommand_from volume" -f -a "snapshots" -d 'List the snapshots a volume holds'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and __fish_seen_subcommand_from volume" -f -a "delete-snapshot" -d 'Remove a snapshot; blocks nothing else uses are freed'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and __fish_seen_subcommand_from volume" -f -a "shadow" -d 'Make a snapshot a shadow: its blocks become reusable'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and __fish_seen_subcommand_from mirror" -f -a "create" -d 'Make a mirror whose base is the full image on MEDIUM (not copied)'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and __fish_seen_subcommand_from mirror" -f -a "add" -d 'Add increments: the blocks they carry enter the mirror, the blocks they free leave it; one atomic commit each'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and __fish_seen_subcommand_from mirror" -f -a "status" -d 'Base, newest snapshot, blocks held and their size against the base'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and __fish_seen_subcommand_from mirror" -f -a "reintegrate" -d 'Write the newest snapshot as a synthetic full (base + mirror)'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and __fish_seen_subcommand_from policy" -f -a "check" -d 'Read and check a policy file; every mistake is named with its line'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and __fish_seen_subcommand_from policy" -f -a "plan" -d 'What is due now (or at --at) and why: the dump and its level, a synthetic full, and every snapshot kept or pruned with the rule that decided it. Touches nothing'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and __fish_seen_subcommand_from policy" -f -a "simulate" -d 'Play the policy forward day by day on a model of the catalog (the levels dumped, synthetic fulls, streams kept, space, restore chain lengths), touching nothing'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and __fish_seen_subcommand_from policy" -f -a "install" -d 'Write a systemd service and timer, or a cron.d file, that runs the policy every few minutes (the plan decides what is due)'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and __fish_seen_subcommand_from track" -f -a "start" -d 'Start tracking changes of a source (a daemon; one per source and catalog)'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and __fish_seen_subcommand_from track" -f -a "status" -d 'Show what the trackers of a catalog have seen'
complete -c snapdump -n "__fish_snapdump_using_subcommand help; and __fish_seen_subcommand_from track" -f -a "stop" -d 'Stop a source\'s tracker'
