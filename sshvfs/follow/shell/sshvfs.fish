# sshvfs shell hook for fish: report the working directory at every prompt.
#
# Source this file from ~/.config/fish/config.fish on the remote host:
#     source /path/to/sshvfs.fish
# Before each prompt it writes  ESC ] 7 ; file://HOSTNAME/PATH ESC \  to the
# terminal (OSC 7), PATH percent-encoded byte by byte (fish's own URL escaping
# works on the UTF-8 bytes), so that `sshvfs follow` (and terminals that
# understand OSC 7) can track the current directory.
# It is a separate fish_prompt event handler, so other handlers and the
# prompt itself are untouched; sourcing this file twice redefines the same
# function and does not emit the sequence twice.  No external command is run.

function __sshvfs_osc7 --on-event fish_prompt --description 'sshvfs: report $PWD (OSC 7)'
    printf '\e]7;file://%s%s\e\\' $hostname (string escape --style=url -- $PWD)
end
