# sshvfs shell hook for zsh: report the working directory at every prompt.
#
# Source this file from ~/.zshrc on the remote host:
#     source /path/to/sshvfs.zsh
# Before each prompt it writes  ESC ] 7 ; file://HOST/PATH ESC \  to the
# terminal (OSC 7), PATH percent-encoded byte by byte, so that `sshvfs follow`
# (and terminals that understand OSC 7) can track the current directory.
# The hook is added to precmd_functions, so an existing precmd function and
# other precmd hooks keep working; sourcing this file twice does not add it
# twice.  No external command is run per prompt.

__sshvfs_osc7() {
    local __sshvfs_status=$?
    emulate -L zsh
    # Byte-wise matching; every byte outside the safe set becomes %XX.
    setopt extended_glob no_multibyte
    local LC_ALL=C
    local __sshvfs_out=${PWD//(#m)[^A-Za-z0-9\/._~-]/%${(l:2::0:)$(( [##16] #MATCH ))}}
    printf '\033]7;file://%s%s\033\\' "${HOST-}" "$__sshvfs_out"
    return $__sshvfs_status
}

typeset -ga precmd_functions
if (( ! ${precmd_functions[(Ie)__sshvfs_osc7]} )); then
    precmd_functions+=(__sshvfs_osc7)
fi
