// buildgwBuild builds an image through a buildgw gateway and returns the
// pushed digest. The agent needs no Docker: the gateway builds in its own
// sandbox and pushes with its own credentials. See buildgwBuild.txt.

def call(Map args = [:]) {
    String server = (args.server ?: env.BUILDGW_URL ?: '').toString().replaceAll('/+$', '')
    if (!server) {
        error('buildgwBuild: no gateway: pass server: or set BUILDGW_URL')
    }
    List tags = asList(args.tags)
    if (!tags) {
        error('buildgwBuild: no destination: pass tags: ["registry.example.com/team/app:1"]')
    }
    String credentialsId = args.credentialsId ?: 'buildgw-token'

    List flags = ['--server', server]
    tags.each { flags += ['--tag', it.toString()] }
    if (args.dockerfile) {
        flags += ['--file', args.dockerfile.toString()]
    }
    def buildArgs = args.buildArgs ?: [:]
    if (buildArgs instanceof Map) {
        buildArgs.each { k, v -> flags += ['--build-arg', "${k}=${v}".toString()] }
    } else {
        asList(buildArgs).each { flags += ['--build-arg', it.toString()] }
    }
    if (args.target) {
        flags += ['--target', args.target.toString()]
    }
    if (args.runner) {
        flags += ['--runner', args.runner.toString()]
    }
    if (args.noCache) {
        flags << '--no-cache'
    }
    flags << (args.context ?: '.').toString()

    // The client: a given one, else the gateway's own, verified against
    // the checksum the gateway publishes.
    String cli = args.cli ?: env.BUILDCTL_LITE ?: ''
    String fetch = cli ? "cli=${q(cli)}" : """\
os=\$(uname -s | tr '[:upper:]' '[:lower:]')
case \$(uname -m) in x86_64|amd64) arch=amd64 ;; aarch64|arm64) arch=arm64 ;; *) arch=\$(uname -m) ;; esac
dir=\$(mktemp -d)
file=buildctl-lite-\$os-\$arch
curl -fsSL -o "\$dir/\$file" ${q(server)}/dl/buildctl-lite/\$os/\$arch >&2 || exit 90
curl -fsSL -o "\$dir/\$file.sha256" ${q(server)}/dl/buildctl-lite/\$os/\$arch.sha256 >&2 || exit 90
(cd "\$dir" && sha256sum -c "\$file.sha256" >&2) || exit 91
chmod +x "\$dir/\$file"
cli=\$dir/\$file"""

    String out
    // A Jenkins secret text, or an oidc-provider ID token credential:
    // both bind as a string.
    withCredentials([string(credentialsId: credentialsId, variable: 'BUILDGW_TOKEN')]) {
        // stdout carries the digest alone; the build log goes to stderr,
        // i.e. the console. The exit status is reported, not thrown, so the
        // failure can be named.
        out = sh(returnStdout: true, script: """\
set +e
${fetch}
"\$cli" submit ${flags.collect { q(it) }.join(' ')}
echo "buildgw-exit=\$?"
""")
    }
    List lines = out.trim().readLines()
    String status = lines ? lines[-1] : ''
    int code = status.startsWith('buildgw-exit=') ? status.substring('buildgw-exit='.length()) as int : -1
    if (code == 90 || code == 91) {
        error("buildgwBuild: could not get a verified buildctl-lite from ${server}")
    }
    if (code != 0) {
        error("buildgwBuild: the build of ${tags.join(', ')} failed (buildctl-lite exit ${code}); see its log above")
    }
    String digest = lines.size() > 1 ? lines[-2].trim() : ''
    if (!(digest ==~ /sha256:[0-9a-f]{64}/)) {
        error("buildgwBuild: no digest in buildctl-lite's output: ${digest}")
    }
    return digest
}

private static List asList(def v) {
    if (v == null) {
        return []
    }
    if (v instanceof Collection) {
        return v as List
    }
    return [v]
}

// q quotes s for sh.
private static String q(def s) {
    return "'" + s.toString().replace("'", "'\\''") + "'"
}
