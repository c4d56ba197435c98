using System.Security.Cryptography.X509Certificates;

namespace TaskMesh.Server.Protocol;

/// <summary>The service's TLS certificate, from PEM files (a certificate or chain, and its private key).</summary>
internal static class TlsCertificates
{
    public static X509Certificate2 Load(string certificateFile, string keyFile)
    {
        using var pem = X509Certificate2.CreateFromPemFile(certificateFile, keyFile);
        if (!pem.HasPrivateKey) throw new ArgumentException($"'{keyFile}' holds no private key for '{certificateFile}'");
        // A key loaded from PEM is ephemeral; TLS on Linux needs it in a store-backed form: export and load again.
        return X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null);
    }
}
