// Embedding an edgekit .pte in an Android app with the ExecuTorch Android library
// (Gradle: implementation("org.pytorch:executorch-android:<the version edgekit exported with,
// see manifest.json tool_versions.executorch>")).
//
// The artifact and its manifest.json are shipped as assets and copied to files/ on first use
// (Module.load needs a file path). The input layout, window length and sample rate are read
// from the manifest, never hard-coded: a model exported for a different window refuses to run.
package com.example.edgekit

import android.content.Context
import org.json.JSONObject
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor
import java.io.File

class EncoderRunner(context: Context, artifact: String = "model.pte") {
    val sampleRate: Int
    val windowSamples: Int
    private val module: Module

    init {
        val manifest = JSONObject(context.assets.open("manifest.json").bufferedReader().readText())
        // edgekit export writes {"edgekit_manifest": 1, "artifacts": {"<file>": {...}}}
        val entry = manifest.getJSONObject("artifacts").getJSONObject(artifact)
        require(entry.getString("format") == "executorch") { "$artifact is not an ExecuTorch artifact" }
        val input = entry.getJSONObject("input")   // name, sample_rate, samples, layout "[1, samples] mono waveform"
        sampleRate = input.getInt("sample_rate")
        windowSamples = input.getInt("samples")
        val file = File(context.filesDir, artifact)
        if (!file.exists()) context.assets.open(artifact).use { src -> file.outputStream().use { src.copyTo(it) } }
        module = Module.load(file.absolutePath)
    }

    /** One window of mono float audio at [sampleRate] -> encoder features, row-major [frames, dim]. */
    fun encode(window: FloatArray): FloatArray {
        require(window.size == windowSamples) {
            "expected $windowSamples samples (${windowSamples.toDouble() / sampleRate} s at $sampleRate Hz), " +
                "got ${window.size}; cut or zero-pad the audio to the window"
        }
        val x = Tensor.fromBlob(window, longArrayOf(1, windowSamples.toLong()))
        val out = module.forward(EValue.from(x))
        return out[0].toTensor().dataAsFloatArray
    }

    fun close() = module.destroy()
}
