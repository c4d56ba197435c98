using System.CommandLine;
using System.Globalization;
using TaskMesh.Server;

namespace TaskMesh.Host.Commands;

/// <summary>
/// <c>taskmesh token key --key-file F</c> makes a signing key (32+ random bytes, base64, readable by
/// its owner only); <c>taskmesh token create --role viewer|operator|admin [--expires 30d]
/// [--subject NAME] --key-file F</c> prints a bearer token for <c>taskmesh serve --token-key-file F</c>.
/// </summary>
internal static class TokenCommand
{
    public static Command Create(CliIO io)
    {
        var keyFile = new Option<string>("--key-file") { Description = "The signing key's file.", Required = true, HelpName = "FILE" };
        var key = new Command("key", "Make a new signing key file (refuses to overwrite one).") { keyFile };
        key.SetAction(parse =>
        {
            string path = parse.GetValue(keyFile)!;
            try
            {
                Tokens.CreateKeyFile(path);
            }
            catch (IOException ex)
            {
                throw new UsageException(File.Exists(path) ? $"--key-file: '{path}' exists; a key is never overwritten (tokens signed with it would stop working)" : $"--key-file: {ex.Message}");
            }
            io.Out.WriteLine($"key written to {path} (readable by its owner only)");
            return ExitCodes.Ok;
        });

        var createKeyFile = new Option<string>("--key-file") { Description = "The signing key's file (taskmesh token key makes one).", Required = true, HelpName = "FILE" };
        var role = new Option<string>("--role") { Description = $"What the token allows: {string.Join(", ", Roles.All)} (each also what the ones before it allow).", Required = true };
        role.AcceptOnlyFromAmong([.. Roles.All]);
        var expires = new Option<string>("--expires") { Description = "How long the token is valid: a number and a unit (s, m, h, d), e.g. 30d, 12h.", DefaultValueFactory = _ => "30d", HelpName = "DURATION" };
        var subject = new Option<string?>("--subject") { Description = "Who holds the token (the service's logs name them; default: the role).", HelpName = "NAME" };
        var create = new Command("create", "Print a bearer token for taskmesh serve --token-key-file.") { role, expires, subject, createKeyFile };
        create.SetAction(parse =>
        {
            var lifetime = ParseDuration(parse.GetValue(expires)!);
            byte[] k;
            try { k = Tokens.LoadKey(parse.GetValue(createKeyFile)!); }
            catch (Exception ex) when (ex is IOException or InvalidDataException or UnauthorizedAccessException) { throw new UsageException($"--key-file: {ex.Message}"); }
            string r = parse.GetValue(role)!;
            io.Out.WriteLine(Tokens.Create(k, r, parse.GetValue(subject) ?? r, lifetime));
            return ExitCodes.Ok;
        });
        return new Command("token", "Bearer tokens for taskmesh serve: make a signing key, create tokens.") { key, create };
    }

    /// <summary>A duration such as <c>30d</c>, <c>12h</c>, <c>90m</c>, <c>3600s</c> (up to ten years).</summary>
    internal static TimeSpan ParseDuration(string text)
    {
        if (text.Length >= 2 && double.TryParse(text.AsSpan(0, text.Length - 1), NumberStyles.Float, CultureInfo.InvariantCulture, out double n) && n > 0)
        {
            TimeSpan? d = text[^1] switch
            {
                's' => TimeSpan.FromSeconds(n),
                'm' => TimeSpan.FromMinutes(n),
                'h' => TimeSpan.FromHours(n),
                'd' => TimeSpan.FromDays(n),
                _ => null,
            };
            if (d is { } span && span <= TimeSpan.FromDays(3650)) return span;
        }
        throw new UsageException($"--expires must be a positive number and a unit (s, m, h, d) up to 3650d, e.g. 30d or 12h; got '{text}'");
    }
}
