/*
 * Command-line driver of the reference inference (appended by `optsearch export --to c`).
 *
 *   @PREFIX@_ref INPUT.f32 N OUTPUT.txt
 *
 * INPUT.f32 holds N samples of @INPUT_SIZE@ float32 values each: the model's input, exactly as the
 * Keras model receives it (e.g. raw 0..255 pixels when the model has its own Rescaling layer).
 * OUTPUT.txt gets one line per sample: the predicted class, then the @CLASSES@ scores (logits).
 */
#include <stdio.h>

int main(int argc, char **argv) {
    static float x[@INPUT_SIZE@];
    double scores[@CLASSES@];
    if (argc != 4) {
        fprintf(stderr, "usage: %s INPUT.f32 N OUTPUT.txt\n", argv[0]);
        return 2;
    }
    FILE *in = fopen(argv[1], "rb");
    FILE *out = fopen(argv[3], "w");
    long n = atol(argv[2]);
    if (!in || !out) {
        fprintf(stderr, "%s: cannot open %s or %s\n", argv[0], argv[1], argv[3]);
        return 2;
    }
    for (long s = 0; s < n; s++) {
        if (fread(x, sizeof(float), @INPUT_SIZE@, in) != @INPUT_SIZE@) {
            fprintf(stderr, "%s: %s ends at sample %ld of %ld\n", argv[0], argv[1], s, n);
            return 1;
        }
        int predicted = @PREFIX@_infer(x, scores);
        fprintf(out, "%d", predicted);
        for (int k = 0; k < @CLASSES@; k++) fprintf(out, " %.17g", scores[k]);
        fprintf(out, "\n");
    }
    fclose(in);
    return fclose(out) == 0 ? 0 : 1;
}
