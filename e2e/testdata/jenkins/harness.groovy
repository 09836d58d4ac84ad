// Runs a shared-library step outside Jenkins with the pipeline steps it
// uses stubbed: sh really runs (through sh -c, with env as its
// environment), withCredentials binds credentials from a map, error throws
// as Jenkins' does.
//
//   groovy harness.groovy VARS_DIR STEP CONFIG.json
//
// CONFIG: {"args": {...}, "env": {...}, "credentials": {"id": "secret"},
// "unix": true}.
// Prints RESULT=<return value> on success; ERROR=<message> and exit 2 when
// the step called error.
import groovy.json.JsonSlurper

class StepError extends RuntimeException {
    StepError(String m) { super(m) }
}

def (varsDir, step, configPath) = args as List
def config = new JsonSlurper().parse(new File(configPath))
Map env = [:] + (config.env ?: [:])
Map credentials = config.credentials ?: [:]

def binding = new Binding()
binding.setVariable('env', env)
binding.setVariable('error', { String msg -> throw new StepError(msg) })
binding.setVariable('string', { Map m -> [kind: 'string'] + m })
// isUnix: the agent's kind; CONFIG "unix": false makes it a Windows agent.
binding.setVariable('isUnix', { -> config.unix == null ? true : config.unix })
binding.setVariable('withCredentials', { List bindings, Closure body ->
    Map saved = [:] + env
    bindings.each { b ->
        if (!credentials.containsKey(b.credentialsId)) {
            throw new StepError("Could not find credentials entry with ID '${b.credentialsId}'")
        }
        env[b.variable] = credentials[b.credentialsId]
    }
    try {
        return body()
    } finally {
        env.clear()
        env.putAll(saved)
    }
})
binding.setVariable('sh', { Map m ->
    def pb = new ProcessBuilder('sh', '-c', m.script as String)
    pb.environment().putAll(env.collectEntries { k, v -> [k as String, v as String] })
    pb.redirectError(ProcessBuilder.Redirect.INHERIT)
    if (!m.returnStdout) {
        pb.redirectOutput(ProcessBuilder.Redirect.INHERIT)
    }
    def p = pb.start()
    String out = m.returnStdout ? p.inputStream.text : ''
    int code = p.waitFor()
    if (m.returnStatus) {
        return code
    }
    if (code != 0) {
        throw new StepError("script returned exit code ${code}")
    }
    return out
})

def script = new GroovyShell(binding).parse(new File(varsDir, step + '.groovy'))
try {
    def result = script.call(config.args ?: [:])
    println "RESULT=${result}"
} catch (StepError e) {
    println "ERROR=${e.message}"
    System.exit(2)
}
