using System.CommandLine;

namespace TaskMesh.Host.Commands;

/// <summary>
/// <c>taskmesh completion bash|zsh</c>: prints a completion script that asks taskmesh itself
/// (the <c>[suggest]</c> directive) for the words that fit where the cursor is.
/// </summary>
internal static class CompletionCommand
{
    public static Command Create(CliIO io)
    {
        var shell = new Argument<string>("shell") { Description = "bash or zsh" };
        shell.AcceptOnlyFromAmong("bash", "zsh");
        var command = new Command("completion", "Print a shell completion script: eval \"$(taskmesh completion bash)\".") { shell };
        command.SetAction(parse =>
        {
            io.Out.Write(parse.GetValue(shell) == "zsh" ? Zsh : Bash);
            return ExitCodes.Ok;
        });
        return command;
    }

    private const string Bash = """
        _taskmesh_complete() {
          local IFS=$'\n'
          COMPREPLY=( $(taskmesh "[suggest:${COMP_POINT}]" "${COMP_LINE}" 2>/dev/null) )
        }
        complete -o default -F _taskmesh_complete taskmesh

        """;

    private const string Zsh = """
        _taskmesh_complete() {
          local -a words
          words=( ${(f)"$(taskmesh "[suggest:${#BUFFER}]" "${BUFFER}" 2>/dev/null)"} )
          compadd -a words
        }
        compdef _taskmesh_complete taskmesh

        """;
}
