using System.Buffers.Binary;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using MessagePack;
using TaskMesh.Server;
using Xunit;

namespace TaskMesh.Tests.Server;

/// <summary>TLS on both transports with a certificate made for the test (PEM files, as an operator gives them).</summary>
public sealed class TlsTests : IAsyncLifetime
{
    private readonly string _dir = Directory.CreateTempSubdirectory("taskmesh-tls-").FullName;
    private TestService _service = null!;
    private TaskMeshServer _server = null!;
    private X509Certificate2 _certificate = null!;

    public async Task InitializeAsync()
    {
        using var rsa = RSA.Create(2048);
        var request = new CertificateRequest("CN=taskmesh-test", rsa, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        var san = new SubjectAlternativeNameBuilder();
        san.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(san.Build());
        _certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
        File.WriteAllText(Path.Combine(_dir, "cert.pem"), _certificate.ExportCertificatePem());
        File.WriteAllText(Path.Combine(_dir, "key.pem"), rsa.ExportPkcs8PrivateKeyPem());

        _service = await TestService.StartAsync(new ServerOptions
        {
            HttpPort = 0,
            SocketPort = 0,
            TlsCertificateFile = Path.Combine(_dir, "cert.pem"),
            TlsKeyFile = Path.Combine(_dir, "key.pem"),
        }, "[store]\nenabled = false\n");
        _server = _service.Server;
    }

    public async Task DisposeAsync()
    {
        await _service.DisposeAsync();
        _certificate.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    /// <summary>Trusts exactly the test's certificate.</summary>
    private bool Trusted(X509Certificate? presented) => presented is not null && presented.GetCertHashString() == _certificate.Thumbprint;

    [Fact]
    public async Task TheHttpApi_IsServedOverTls_AndNotInClearText()
    {
        Assert.Equal("https", _server.HttpAddress.Scheme);
        using var handler = new HttpClientHandler { ServerCertificateCustomValidationCallback = (_, cert, _, _) => Trusted(cert) };
        using var https = new HttpClient(handler) { BaseAddress = _server.HttpAddress };
        Assert.Equal("ok", (await https.GetStringAsync("health")).Trim());

        using var clear = new HttpClient { BaseAddress = new Uri($"http://{_server.HttpAddress.Authority}/") };
        await Assert.ThrowsAnyAsync<HttpRequestException>(() => clear.GetStringAsync("health"));
    }

    /// <summary>
    /// <c>taskmesh dashboard</c> takes the service's settings from the config as <c>serve</c> does (one
    /// builder for the three commands that serve HTTP): TLS files named in <c>[api]</c>, relative to
    /// the config file, make it serve https.
    /// </summary>
    [Fact]
    public async Task TheDashboardCommand_ServesHttps_WithTheConfigsCertificate()
    {
        var store = Path.Combine(_dir, "runs.db");
        var graph = Path.Combine(_dir, "one.json");
        File.WriteAllText(graph, """{"name": "one", "tasks": [{"id": "a", "handler": "noop"}]}""");
        var (code, _, stderr) = await TaskMesh.Tests.Host.CliTests.Taskmesh(_dir, "run", graph, "--store", store, "--progress", "none");
        Assert.True(code == 0, stderr);
        var config = Path.Combine(_dir, "service.toml");
        File.WriteAllText(config, "[api]\ntls_certificate = \"cert.pem\"\ntls_key = \"key.pem\"\n");

        var psi = new System.Diagnostics.ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = Path.GetTempPath() };
        psi.Environment["TASKMESH_HOME"] = _dir;
        foreach (var a in (string[])[Path.Combine(AppContext.BaseDirectory, "taskmesh.dll"), "dashboard", "--config", config, "--store", store, "--port", "0"]) psi.ArgumentList.Add(a);
        using var process = System.Diagnostics.Process.Start(psi)!;
        var errors = process.StandardError.ReadToEndAsync();
        try
        {
            string? line = await process.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(60));
            var match = System.Text.RegularExpressions.Regex.Match(line ?? "", @" at (\S+) ");
            Assert.True(match.Success, $"{line}\n{(process.HasExited ? await errors : "")}");
            var address = new Uri(match.Groups[1].Value);
            Assert.Equal("https", address.Scheme);
            using var handler = new HttpClientHandler { ServerCertificateCustomValidationCallback = (_, cert, _, _) => Trusted(cert) };
            using var https = new HttpClient(handler) { BaseAddress = address, Timeout = TimeSpan.FromSeconds(30) };
            Assert.Contains("\"run_id\"", await https.GetStringAsync("api/runs"));
        }
        finally
        {
            if (!process.HasExited)
            {
                using (var kill = System.Diagnostics.Process.Start("kill", ["-TERM", process.Id.ToString()])!) await kill.WaitForExitAsync();
                await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
            }
        }
        Assert.Equal(0, process.ExitCode);
    }

    [Fact]
    public async Task TheSocketProtocol_SpeaksTlsFirst_AndAClientWithoutItIsDropped()
    {
        using (var tcp = new TcpClient())
        {
            await tcp.ConnectAsync(_server.SocketEndpoint!);
            await using var ssl = new SslStream(tcp.GetStream(), false, (_, cert, _, _) => Trusted(cert));
            await ssl.AuthenticateAsClientAsync("127.0.0.1");
            var payload = MessagePackSerializer.Serialize(new object?[] { 1, 0u, new object?[] { 1, null, "tls" } });
            var header = new byte[4];
            BinaryPrimitives.WriteUInt32BigEndian(header, (uint)payload.Length);
            await ssl.WriteAsync(header);
            await ssl.WriteAsync(payload);
            await ssl.ReadExactlyAsync(header);
            var answer = new byte[BinaryPrimitives.ReadUInt32BigEndian(header)];
            await ssl.ReadExactlyAsync(answer);
            Assert.Equal(2, Convert.ToInt32(MessagePackSerializer.Deserialize<object?[]>(answer)[0]));   // welcome
        }

        // A client that speaks the protocol in clear text: the TLS handshake fails and the connection is closed.
        using var plain = new TcpClient();
        await plain.ConnectAsync(_server.SocketEndpoint!);
        var s = plain.GetStream();
        var hello = MessagePackSerializer.Serialize(new object?[] { 1, 0u, new object?[] { 1, null, "clear" } });
        await s.WriteAsync(new byte[] { 0, 0, 0, (byte)hello.Length });
        await s.WriteAsync(hello);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var buffer = new byte[4096];
        try
        {
            while (await s.ReadAsync(buffer, cts.Token) > 0) { }
        }
        catch (IOException) { }
        Assert.False(cts.IsCancellationRequested);   // closed by the service, not timed out
    }

    [Fact]
    public async Task ThePythonClient_SpeaksTlsWithTheCertificateItIsGiven_AndNotWithoutIt()
    {
        var graph = Path.Combine(_dir, "g.json");
        File.WriteAllText(graph, """{ "name": "tls", "tasks": [ { "id": "a", "handler": "noop" }, { "id": "b", "handler": "noop", "dependsOn": ["a"] } ] }""");
        string server = $"127.0.0.1:{_server.SocketEndpoint!.Port}";
        var (code, stdout, stderr) = await Python("submit", graph, "--server", server, "--wait", "--ca-file", Path.Combine(_dir, "cert.pem"));
        Assert.True(code == 0, stderr + stdout);
        using (var doc = System.Text.Json.JsonDocument.Parse(stdout))
            Assert.Equal("succeeded", doc.RootElement.GetProperty("status").GetString());
        // Trusting only the system's roots, the test's certificate is refused; in clear text the service drops it.
        (code, _, stderr) = await Python("submit", graph, "--server", server, "--tls");
        Assert.Equal(3, code);
        Assert.Contains("CERTIFICATE_VERIFY_FAILED", stderr);
        (code, _, _) = await Python("submit", graph, "--server", server);
        Assert.Equal(3, code);
    }

    private Task<(int Code, string Stdout, string Stderr)> Python(params string[] args) => PythonClientTests.RunClientAsync(_dir, args);

    [Fact]
    public void OtherMachines_AreServedOnlyWithTlsAndTokens_OrInsecure()
    {
        var both = new ServerOptions { Host = "0.0.0.0", TokenKeyFile = "k", TlsCertificateFile = "c", TlsKeyFile = "p" };
        Assert.Empty(both.Problems());
        Assert.Contains(new ServerOptions { Host = "0.0.0.0", TlsCertificateFile = "c", TlsKeyFile = "p" }.Problems(), p => p.Contains("token", StringComparison.Ordinal));
        Assert.Contains(new ServerOptions { Host = "0.0.0.0", TokenKeyFile = "k" }.Problems(), p => p.Contains("TLS", StringComparison.Ordinal));
        Assert.Contains(new ServerOptions { TlsCertificateFile = "c" }.Problems(), p => p.Contains("both", StringComparison.Ordinal));
    }
}
