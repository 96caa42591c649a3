/* The executable of the shared-object matrix (tests/shared_matrix_test.cc): the test program itself is
   built into a library, its main renamed prepatch_program_main; this calls it. */
int prepatch_program_main(int argc, char** argv);

int main(int argc, char** argv) { return prepatch_program_main(argc, argv); }
