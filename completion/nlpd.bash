# bash completion for nlpd (installed by `make install` into share/bash-completion/completions/nlpd)
_nlpd()
{
    local cur prev cmd
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD-1]}
    cmd=${COMP_WORDS[1]}
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "run check pipe demo config-doc infer tokenize version help --help --version" -- "$cur"))
        return
    fi
    case $prev in
    -c | --config | -i | --input)
        COMPREPLY=($(compgen -f -- "$cur"))
        return ;;
    --model)
        COMPREPLY=($(compgen -d -- "$cur"))
        return ;;
    --backend)
        COMPREPLY=($(compgen -W "auto cpu cuda" -- "$cur"))
        return ;;
    --dtype)
        COMPREPLY=($(compgen -W "auto fp32 fp16 bf16 int8" -- "$cur"))
        return ;;
    esac
    case $cmd in
    run | check | pipe) COMPREPLY=($(compgen -W "-c --config --help" -- "$cur")) ;;
    demo) COMPREPLY=($(compgen -W "-c --config -i --input --help" -- "$cur")) ;;
    infer) COMPREPLY=($(compgen -W "--model --max-length --num-beams --threads --backend --dtype --device --help" -- "$cur")) ;;
    tokenize) COMPREPLY=($(compgen -W "--model --max-length --decode --help" -- "$cur")) ;;
    help) COMPREPLY=($(compgen -W "run check pipe demo config-doc infer tokenize version" -- "$cur")) ;;
    esac
}
complete -F _nlpd nlpd
