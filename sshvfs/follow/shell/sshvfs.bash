# sshvfs shell hook for bash: report the working directory at every prompt.
#
# Source this file from ~/.bashrc on the remote host:
#     . /path/to/sshvfs.bash
# Before each prompt it writes  ESC ] 7 ; file://HOSTNAME/PATH ESC \  to the
# terminal (OSC 7), PATH percent-encoded byte by byte, so that `sshvfs follow`
# (and terminals that understand OSC 7) can track the current directory.
# An existing PROMPT_COMMAND (string or, in bash >= 5.1, array) keeps working
# (with bash-preexec loaded first, the hook goes into its precmd_functions);
# sourcing this file twice does not emit the sequence twice.  No external
# command is run per prompt.

__sshvfs_osc7() {
    local __sshvfs_status=$?
    # Byte-wise processing and ASCII-only ranges in the patterns below.
    local LC_ALL=C
    local __sshvfs_path=$PWD __sshvfs_out= __sshvfs_c __sshvfs_i
    if [[ $__sshvfs_path == *[!A-Za-z0-9/._~-]* ]]; then
        for (( __sshvfs_i = 0; __sshvfs_i < ${#__sshvfs_path}; __sshvfs_i++ )); do
            __sshvfs_c=${__sshvfs_path:__sshvfs_i:1}
            case $__sshvfs_c in
                [A-Za-z0-9/._~-]) __sshvfs_out+=$__sshvfs_c ;;
                *) printf -v __sshvfs_c '%%%02X' "'$__sshvfs_c"
                   __sshvfs_out+=$__sshvfs_c ;;
            esac
        done
    else
        __sshvfs_out=$__sshvfs_path
    fi
    printf '\033]7;file://%s%s\033\\' "${HOSTNAME-}" "$__sshvfs_out"
    return "$__sshvfs_status"
}

__sshvfs_install() {
    local __sshvfs_elem
    # With bash-preexec loaded, PROMPT_COMMAND belongs to it: use its hooks.
    if [[ -n ${bash_preexec_imported-}${__bp_imported-} ]]; then
        for __sshvfs_elem in "${precmd_functions[@]}"; do
            [[ $__sshvfs_elem == __sshvfs_osc7 ]] && return 0
        done
        precmd_functions+=(__sshvfs_osc7)
        return 0
    fi
    case $(declare -p PROMPT_COMMAND 2>/dev/null) in
        'declare -a'*)
            if (( BASH_VERSINFO[0] > 5 || (BASH_VERSINFO[0] == 5 && BASH_VERSINFO[1] >= 1) )); then
                for __sshvfs_elem in "${PROMPT_COMMAND[@]}"; do
                    [[ $__sshvfs_elem == *__sshvfs_osc7* ]] && return 0
                done
                PROMPT_COMMAND+=(__sshvfs_osc7)
                return 0
            fi
            # Older bash runs only the first element of an array.
            ;;
    esac
    [[ ${PROMPT_COMMAND-} == *__sshvfs_osc7* ]] && return 0
    # A newline (not ';') is a safe separator even if the old value ends in ';'.
    PROMPT_COMMAND=${PROMPT_COMMAND:+$PROMPT_COMMAND$'\n'}__sshvfs_osc7
}

__sshvfs_install
unset -f __sshvfs_install
